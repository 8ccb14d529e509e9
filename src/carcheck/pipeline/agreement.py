"""Multi-view reconciliation (Ma et al., IEEE T-ITS 2023, sections II-D-3 and II-D-4).

Views relate by their sets of visible parts: the same set means the same perspective; a
strict subset means a close-up of the other view. For every (part, damage) finding,
K_agree = (photos that show the finding) / (photos in which the part is visible), and
C_refined = C_base · K_agree; findings under the review threshold go to a person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PhotoFindings", "CaseFinding", "view_relations", "reconcile"]


@dataclass
class PhotoFindings:
    """Per-photo input: its name, visible parts, and (part, damage) -> (C_base, covered fraction, size class)."""

    name: str
    visible_parts: set[str]
    findings: dict[tuple[str, str], tuple[float, float, str]] = field(default_factory=dict)


@dataclass
class CaseFinding:
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
    flag when C_refined < ``review_threshold``.
    """
    keys = sorted({k for p in photos for k in p.findings})
    out = []
    for part, damage in keys:
        showing = [p for p in photos if (part, damage) in p.findings]
        if part == "unassigned":
            visible = photos
        else:
            visible = [p for p in photos if part in p.visible_parts or (part, damage) in p.findings]
        c_base = max(p.findings[(part, damage)][0] for p in showing)
        k_agree = len(showing) / max(1, len(visible))
        c_ref = c_base * k_agree
        frac = max(p.findings[(part, damage)][1] for p in showing)
        size = max((p.findings[(part, damage)][2] for p in showing), key=_SIZE_ORDER.__getitem__)
        reasons = []
        if c_ref < review_threshold:
            reasons.append(f"C_refined {c_ref:.2f} < {review_threshold:.2f}")
        if k_agree < 1.0:
            missing = [p.name for p in visible if p not in showing]
            reasons.append(f"not seen in {len(missing)} of {len(visible)} photos showing the part")
        if part == "unassigned":
            reasons.append("damage not on a segmented part")
        out.append(CaseFinding(part, damage, c_base, k_agree, c_ref, frac, size, [p.name for p in showing],
                               needs_review=c_ref < review_threshold or part == "unassigned", review_reasons=reasons))
    return sorted(out, key=lambda f: -f.c_refined)
