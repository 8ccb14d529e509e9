"""Multi-view reconciliation (Ma et al., IEEE T-ITS 2023, sections II-D-3 and II-D-4).

Views relate by their sets of visible parts: the same set means the same perspective; a
strict subset means a close-up of the other view. For every (part, damage) finding,
K_agree = (photos that show the finding) / (photos in which the part is visible), and
C_refined = C_base · K_agree. Whether a finding goes to a person is decided in :mod:`.review`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .review import UNASSIGNED, finding_review

__all__ = ["PhotoFindings", "CaseFinding", "view_relations", "reconcile"]


@dataclass
class PhotoFindings:
    """Per-photo input: its name, visible parts, (part, damage) -> (C_base, covered fraction, size
    class), and (part, damage) -> review reasons of its regions (an implausible pair, :mod:`.plausibility`)."""

    name: str
    visible_parts: set[str]
    findings: dict[tuple[str, str], tuple[float, float, str]] = field(default_factory=dict)
    region_reasons: dict[tuple[str, str], list[str]] = field(default_factory=dict)


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
            visible = [p for p in photos if part in p.visible_parts or (part, damage) in p.findings]
        c_base = max(p.findings[(part, damage)][0] for p in showing)
        k_agree = len(showing) / max(1, len(visible))
        c_ref = c_base * k_agree
        frac = max(p.findings[(part, damage)][1] for p in showing)
        size = max((p.findings[(part, damage)][2] for p in showing), key=_SIZE_ORDER.__getitem__)
        missing = [p.name for p in visible if p not in showing]
        region = [r for p in showing for r in p.region_reasons.get((part, damage), [])]
        needs, reasons = finding_review(part, c_ref, k_agree, len(missing), len(visible), review_threshold, region)
        out.append(CaseFinding(part, damage, c_base, k_agree, c_ref, frac, size, [p.name for p in showing],
                               needs_review=needs, review_reasons=reasons))
    return sorted(out, key=lambda f: -f.c_refined)
