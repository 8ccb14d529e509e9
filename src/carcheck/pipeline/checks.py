"""The image-level checks of one photo, as pure rules on numbers (no models, no I/O).

- presence: the presence head's P(vehicle) below ``presence_threshold`` -> out of scope; without the
  head, the fallback rule of :mod:`.gate` (ImageNet vehicle score OR part coverage).
- damage filter (CarDD, Wang et al., section V-G): the damaged/undamaged classifier double-checks
  the segmenter. Its verdict table (p = P(damaged), thresholds from the config):

  ===========================  ==========================  =================
  segmented damage?            filter                      verdict
  ===========================  ==========================  =================
  no                           1 - p > clean_threshold     ``clean``
  yes                          1 - p > clean_threshold     ``no damage?``
  no                           p > damaged_threshold       ``damage missed?``
  any other combination                                    ``agrees``
  ===========================  ==========================  =================

  ``no damage?`` and ``damage missed?`` send the photo to review (:mod:`.review` words why).
- severity gate: a severity grade means something only for a damaged car: it is reported when
  damage was segmented or P(damaged) > ``severity_min_p_damaged``.
- make/model OOD rule: the OOD head's max logit below its threshold (of the precision the networks
  ran in) -> the photo shows a car outside the known models (no label).
"""

from __future__ import annotations

from .gate import passes_gate

__all__ = ["FILTER_VERDICTS", "FLAGGED_VERDICTS", "damage_filter_verdict", "severity_applies", "ood_out_of_scope",
           "presence_skip_reason"]

#: Every verdict of the damage filter.
FILTER_VERDICTS = ("clean", "agrees", "damage missed?", "no damage?")
#: The verdicts that send a photo to review.
FLAGGED_VERDICTS = ("damage missed?", "no damage?")


def damage_filter_verdict(p_damaged: float, has_damage: bool, clean_threshold: float, damaged_threshold: float) -> str:
    """The damage filter's verdict on one photo (table in the module docstring).

    Args:
        p_damaged: the filter's P(damaged), in [0, 1].
        has_damage: whether the segmenter found any damaged region on the photo.
        clean_threshold: P(undamaged) above which the filter calls the photo undamaged.
        damaged_threshold: P(damaged) above which the filter calls the photo damaged.
    Returns:
        one of :data:`FILTER_VERDICTS`.
    """
    p_clean = 1 - p_damaged
    if not has_damage and p_clean > clean_threshold:
        return "clean"
    if has_damage and p_clean > clean_threshold:
        return "no damage?"
    if not has_damage and p_damaged > damaged_threshold:
        return "damage missed?"
    return "agrees"


def severity_applies(has_damage: bool, p_damaged: float | None, min_p_damaged: float) -> bool:
    """Whether a severity grade is reported for a photo: damage was segmented, or the damage filter's
    P(damaged) (None without the filter) exceeds ``min_p_damaged``."""
    return has_damage or (p_damaged or 0.0) > min_p_damaged


def ood_out_of_scope(max_logit: float, threshold: float) -> bool:
    """The max-logit OOD rule (Vaze et al. 2022): True (out of scope) when ``max_logit < threshold``."""
    return max_logit < threshold


def presence_skip_reason(p_vehicle: float | None, presence_threshold: float, vehicle_score: float,
                         part_coverage: float | None, vehicle_threshold: float,
                         part_coverage_threshold: float) -> str | None:
    """Why a photo is skipped as showing no vehicle, or None when it passes the presence gate.

    With the presence head (``p_vehicle`` not None) its P(vehicle) decides alone; without it the
    fallback rule of :func:`~.gate.passes_gate` does (ImageNet ``vehicle_score`` OR
    ``part_coverage``, the fraction of the photo labelled as parts; None when the part map was not
    computed, which counts as no coverage).
    """
    if p_vehicle is not None:
        if p_vehicle < presence_threshold:
            return (f"out of scope: no vehicle (presence head P(vehicle) {p_vehicle:.3f} < "
                    f"{presence_threshold:.2f})")
        return None
    coverage = part_coverage or 0.0
    if passes_gate(vehicle_score, coverage, vehicle_threshold, part_coverage_threshold):
        return None
    return (f"no vehicle: presence score {vehicle_score:.3f} < {vehicle_threshold:.3f} "
            f"and part coverage {coverage:.2f} < {part_coverage_threshold:.2f}")
