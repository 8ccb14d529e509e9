"""Multi-view reconciliation (Ma et al., IEEE T-ITS 2023, sections II-D-3 and II-D-4).

Views relate by their sets of visible parts: the same set means the same perspective; a
strict subset means a close-up of the other view. For every (part, damage) finding,
K_agree = (photos that show the finding) / (photos in which the part is visible), and
C_refined = C_base · K_agree. Whether a finding goes to a person is decided in :mod:`.review`.

Per physical part (:func:`reconcile_parts`, issue 16): the question a handler asks first is "is
this part damaged", whatever type each view calls it. K_agree of a part counts *views*, not
photos: a close-up joins the full view it is a close-up of (the tightest one, by the view
relations above) and photos of the same perspective join each other, so a scratch that only the
close-up resolves is not outvoted by its own full view, and three shots from one spot are one
view. K_agree = views showing plausible damage on the part / views showing the part.

"Showing the part" means the photo is an exterior view (``PhotoFindings.exterior_view``): a photo searched
although the photo-type head calls it something else (an interior, a cargo area, an unsure close-up) counts
only where it shows damage on the part, and a finding only such photos show goes to review; likewise one only
second looks show (:mod:`.photo`). A cargo-area photo whose part map "sees" the rear bumper is no clean view of it.

Each part also gets P(part damaged) from :mod:`.confidence` (when a fitted model is given; the review
decision is then made on it, :func:`~.review.part_review`) and a grade from :mod:`.severity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .confidence import PartConfidence, PhotoEvidence, part_features
from .review import UNASSIGNED, finding_review, part_review
from .severity import part_grade

__all__ = ["PhotoFindings", "CaseFinding", "PartCaseFinding", "view_relations", "view_groups", "reconcile",
           "reconcile_parts"]


@dataclass
class PhotoFindings:
    """Per-photo input: its name, visible parts, (part, damage) -> (C_base, covered fraction, size
    class), (part, damage) -> review reasons of its regions (an implausible pair, :mod:`.plausibility`), and,
    when its findings come from the second look (:func:`~.photo.photo_detections`), why: a finding or part
    that only such photos show goes to review."""

    name: str
    visible_parts: set[str]
    findings: dict[tuple[str, str], tuple[float, float, str]] = field(default_factory=dict)
    region_reasons: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    closeup: bool = False  # a close-up (few visible parts), not a full view
    second_look: str | None = None
    exterior_view: bool = True  # False: searched although not typed an exterior view; counts only where it shows damage


def _first_look(showing: Sequence[PhotoFindings]) -> list[PhotoFindings]:
    """The photos whose C_base counts: those found by the first look, or all when only second looks show it (a
    second look adds views to K_agree, never a higher C_base to a part the first look found)."""
    return [p for p in showing if not p.second_look] or list(showing)


def _weak_photos_only(showing: Sequence[PhotoFindings]) -> list[str]:
    """Review flags of a finding only weak photos show: the second-look reasons (each once) when every photo
    showing it found it only in a second look, and a note when none of them is typed an exterior view."""
    reasons = [p.second_look for p in showing]
    out = list(dict.fromkeys(reasons)) if reasons and all(reasons) else []
    if showing and not any(p.exterior_view for p in showing):
        out.append("seen only in photos the photo-type head does not call exterior views")
    return out


@dataclass
class CaseFinding:
    """One (part, damage) finding of the case (fractions in [0, 1]; ``photos`` by name)."""

    part: str
    damage: str
    c_base: float
    k_agree: float
    c_refined: float
    area_fraction: float
    size_class: str
    photos: list[str]
    needs_review: bool
    review_reasons: list[str]


def view_relations(photos: list[PhotoFindings]) -> dict[str, dict[str, list[str]]]:
    """For each photo: ``same_perspective_as`` (equal visible-part sets) and ``closeup_of``
    (photos whose visible-part set strictly contains this one's). Photos with no visible part relate to none."""
    out = {}
    for a in photos:
        same, closeup = [], []
        for b in photos:
            if a is b or not a.visible_parts:
                continue
            if a.visible_parts == b.visible_parts:
                same.append(b.name)
            elif a.visible_parts < b.visible_parts:
                closeup.append(b.name)
        out[a.name] = {"same_perspective_as": same, "closeup_of": closeup}
    return out


_SIZE_ORDER = {"small": 0, "medium": 1, "large": 2}


def reconcile(photos: list[PhotoFindings], review_threshold: float = 0.5) -> list[CaseFinding]:
    """Case-level findings with K_agree and C_refined.

    For each (part, damage) pair seen in any photo: the photos showing it, C_base = the highest
    per-photo C_base, K_agree = those photos / photos where the part is visible (for
    ``unassigned`` damage: / all assessed photos), C_refined = C_base · K_agree, and a review
    flag and its reasons from :func:`~.review.finding_review`.
    """
    keys = sorted({k for p in photos for k in p.findings})
    out = []
    for part, damage in keys:
        showing = [p for p in photos if (part, damage) in p.findings]
        if part == UNASSIGNED:
            visible = photos
        else:
            visible = [p for p in photos
                       if (part in p.visible_parts and p.exterior_view) or (part, damage) in p.findings]
        c_base = max(p.findings[(part, damage)][0] for p in _first_look(showing))
        k_agree = len(showing) / max(1, len(visible))
        c_ref = c_base * k_agree
        frac = max(p.findings[(part, damage)][1] for p in showing)
        size = max((p.findings[(part, damage)][2] for p in showing), key=_SIZE_ORDER.__getitem__)
        missing = [p.name for p in visible if p not in showing]
        region = [r for p in showing for r in p.region_reasons.get((part, damage), [])] + _weak_photos_only(showing)
        needs, reasons = finding_review(part, c_ref, k_agree, len(missing), len(visible), review_threshold, region)
        out.append(CaseFinding(part, damage, c_base, k_agree, c_ref, frac, size, [p.name for p in showing],
                               needs_review=needs, review_reasons=reasons))
    return sorted(out, key=lambda f: -f.c_refined)


@dataclass
class PartCaseFinding:
    """One physical part of the case with damage on it (fractions in [0, 1]; photos by name).

    ``damages``: the plausible damage types seen on it, highest C_refined first (all types when
    every region on it was implausible); ``views_damaged`` / ``views_visible``: views (see the
    module doc) showing plausible damage on it / showing it; ``k_agree`` their ratio;
    ``c_base``: the highest C_base of its plausible findings; ``c_refined`` = C_base · K_agree;
    ``p_damaged``: the calibrated P(part damaged) (None without a confidence model) and ``features`` its
    inputs (:mod:`.confidence`); ``grade`` / ``grade_reason``: :mod:`.severity`."""

    part: str
    damages: list[str]
    c_base: float
    k_agree: float
    c_refined: float
    views_damaged: int
    views_visible: int
    photos: list[str]
    needs_review: bool
    review_reasons: list[str]
    p_damaged: float | None = None
    features: dict[str, float] = field(default_factory=dict)
    grade: str = "minor"
    grade_reason: str = ""


def view_groups(photos: list[PhotoFindings]) -> dict[str, int]:
    """Photo name -> view id: photos of the same perspective share a view, and a close-up joins the
    view of the full view it is a close-up of with the fewest visible parts (ties: the first
    given). Full views are never joined to each other through a close-up, so views do not chain."""
    rel = view_relations(photos)
    by_name = {p.name: p for p in photos}
    parent = {p.name: p.name for p in photos}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in photos:
        for q in rel[p.name]["same_perspective_as"]:
            a, b = find(p.name), find(q)
            if a != b:
                parent[max(a, b)] = min(a, b)
    for p in photos:
        if not p.closeup:
            continue
        fulls = [by_name[q] for q in rel[p.name]["closeup_of"] if not by_name[q].closeup]
        if fulls:
            host = min(fulls, key=lambda q: len(q.visible_parts))
            a, b = find(p.name), find(host.name)
            if a != b:
                parent[a] = b
    ids: dict[str, int] = {}
    return {p.name: ids.setdefault(find(p.name), len(ids)) for p in photos}


def reconcile_parts(photos: list[PhotoFindings], findings: list[CaseFinding],
                    review_threshold: float = 0.5, evidence: Mapping[str, PhotoEvidence] | None = None,
                    confidence: PartConfidence | None = None) -> list[PartCaseFinding]:
    """Per physical part (module doc): K_agree over views, C_refined, P(part damaged), a grade, a review
    flag and its reasons (:func:`~.review.part_review`), for every segmented part with a finding
    (``unassigned`` damage stays a finding only). Sorted by C_refined, highest first.

    Args:
        photos: the case's assessed photos (as for :func:`reconcile`).
        findings: :func:`reconcile`'s result for the same photos (orders each part's damage types).
        review_threshold: C_refined below this needs review (the paper's rule; used when ``confidence``
            is None).
        evidence: photo name -> its damage-filter probability, photo-type certainty and severity grade
            (missing photos: no evidence).
        confidence: a fitted P(part damaged) model; review is then decided on P < its threshold.
    """
    evidence = evidence or {}
    view = view_groups(photos)
    order = {(f.part, f.damage): f.c_refined for f in findings}
    out = []
    for part in sorted({k[0] for p in photos for k in p.findings if k[0] != UNASSIGNED}):
        keys = {k for p in photos for k in p.findings if k[0] == part}
        flagged = {k for p in photos for k in keys if p.region_reasons.get(k)}
        plausible = keys - flagged or keys  # every region implausible: keep them, the part goes to review
        showing = [p for p in photos if any(k in p.findings for k in plausible)]
        visible = [p for p in photos if (part in p.visible_parts and p.exterior_view) or p in showing]
        views_damaged = {view[p.name] for p in showing}
        views_visible = {view[p.name] for p in visible}
        k_agree = len(views_damaged) / max(1, len(views_visible))
        c_base = max(p.findings[k][0] for p in _first_look(showing) for k in plausible if k in p.findings)
        clean_full = [p.name for p in visible if p not in showing and not p.closeup and view[p.name] not in views_damaged]
        region = [r for p in photos for k in sorted(keys) for r in p.region_reasons.get(k, [])] if not keys - flagged else []
        region += _weak_photos_only(showing)
        ev = [evidence.get(p.name, PhotoEvidence()) for p in showing]
        area = max(p.findings[k][1] for p in showing for k in plausible if k in p.findings)
        feats = part_features(c_base, k_agree, len(views_damaged), area, ev)
        p_dmg = confidence.probability(feats) if confidence is not None else None
        needs, reasons = part_review(c_base * k_agree, len(views_damaged), len(views_visible), review_threshold,
                                     [p.name for p in showing], clean_full, region, p_damaged=p_dmg,
                                     p_threshold=None if confidence is None else confidence.threshold)
        damages = sorted({k[1] for k in plausible}, key=lambda d: (-order.get((part, d), 0.0), d))
        grade, why = part_grade(damages, area, ev)
        out.append(PartCaseFinding(part, damages, c_base, k_agree, c_base * k_agree, len(views_damaged),
                                   len(views_visible), [p.name for p in showing], needs, reasons,
                                   None if p_dmg is None else round(p_dmg, 4),
                                   {k: round(v, 4) for k, v in feats.items()}, grade, why))
    return sorted(out, key=lambda f: -f.c_refined)
