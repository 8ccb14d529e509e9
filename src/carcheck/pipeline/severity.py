"""A grade per damaged part, minor / moderate / severe, with the reason (issue 26, item 3).

CarDD's six types say what a damage is, not how bad: a crushed, torn or missing panel is labelled as
a large dent, crack or nothing at all. The grade combines what the pipeline has for one part, in this
order (the first rule that applies decides, and its reason is stated):

1. ``severe``: the image-level severity head (trained on vds_damage_severity's minor / moderate / severe
   photos; its model card) calls a photo showing the part's damage ``severe`` with P >= ``min_p``; or
   deformation or breakage (dent, crack, glass_shatter, lamp_broken) covers at least ``severe_area`` of
   the part in one photo (a panel that is mostly dent is crushed);
2. ``moderate``: the head calls a photo ``moderate`` with P >= ``min_p``; or damage covers at least
   ``moderate_area`` of the part; or the type means the part is replaced rather than repaired
   (glass_shatter, lamp_broken, tire_flat, crack);
3. ``minor``: otherwise (scratches and small dents).

The area cuts are declared here (a quarter of a part: severe; a tenth: moderate), not fitted: the dev
cases hold two severely deformed parts, too few to fit them on. ``bench/cases.py`` states per damaged
group whether it was found and with which grade.

A pure module: numbers in, a grade out.
"""

from __future__ import annotations

from typing import Sequence

from .confidence import PhotoEvidence

__all__ = ["GRADES", "REPLACED_TYPES", "part_grade"]

GRADES = ("minor", "moderate", "severe")
#: Types after which the part is replaced, not repaired.
REPLACED_TYPES = ("glass_shatter", "lamp_broken", "tire_flat", "crack")
_DEFORMATION = ("dent", "crack", "glass_shatter", "lamp_broken")


def part_grade(damages: Sequence[str], max_area_fraction: float, evidence: Sequence[PhotoEvidence],
               min_p: float = 0.5, severe_area: float = 0.25, moderate_area: float = 0.10) -> tuple[str, str]:
    """Grade one damaged part (module doc).

    Args:
        damages: the damage types seen on the part.
        max_area_fraction: largest fraction of the part covered by damage in one photo, in [0, 1].
        evidence: one entry per photo showing the damage (its severity grade and probability, if run).
        min_p: the severity head's probability at which its grade counts.
        severe_area, moderate_area: fractions of the part (module doc).
    Returns:
        ``(grade, reason)``, grade one of :data:`GRADES`.
    """
    area = max(0.0, min(1.0, float(max_area_fraction)))
    graded = [(e.severity, e.severity_probability) for e in evidence
              if e.severity is not None and e.severity_probability is not None and e.severity_probability >= min_p]
    for g, p in sorted(graded, key=lambda t: -t[1]):
        if g == "severe":
            return "severe", f"severity head: severe (P {p:.2f}) on a photo showing it"
    deform = [d for d in damages if d in _DEFORMATION]
    if deform and area >= severe_area:
        return "severe", f"{deform[0].replace('_', ' ')} over {area:.0%} of the part"
    for g, p in sorted(graded, key=lambda t: -t[1]):
        if g == "moderate":
            return "moderate", f"severity head: moderate (P {p:.2f}) on a photo showing it"
    if area >= moderate_area:
        return "moderate", f"damage over {area:.0%} of the part"
    replaced = [d for d in damages if d in REPLACED_TYPES]
    if replaced:
        return "moderate", f"{replaced[0].replace('_', ' ')}: the part is usually replaced"
    return "minor", f"{'/'.join(damages) or 'damage'} over {area:.0%} of the part"
