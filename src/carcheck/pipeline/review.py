"""The one place that decides what needs a person, and says why.

Every review flag of a report comes from a function here; the other modules only measure (a
verdict, a distance, C_refined) and the orchestrator passes those numbers in.

A **finding** (one (part, damage) pair reconciled over the case, :func:`finding_review`) needs review
when

- C_refined = C_base · K_agree is below ``review_threshold`` (Ma et al. II-D-4),
- the damage lies on no segmented part (``unassigned``), or
- a photo's region of it is an implausible damage type for its part that could not be moved to a
  plausible neighbouring part (:mod:`.plausibility`).

A finding seen in only some of the photos that show its part gets the note "not seen in k of n
photos" in its reasons; that alone does not flag it (C_refined already carries K_agree).

A **physical part** (:func:`part_review`, the report's per-part findings) needs review when its calibrated
P(part damaged) (:mod:`.confidence`; issue 26) is below the fitted model's threshold, or when every region
on it is implausible for the part. Without a fitted model the paper's rule applies: C_refined below
``review_threshold``, or damage in one photo only while full views of other perspectives show the part clean.

A **photo** (:func:`photo_review_reasons`) needs review when

- the damage filter disagrees with the segmenter (verdict ``no damage?`` or ``damage missed?``,
  :func:`~.checks.damage_filter_verdict`),
- the same-vehicle check calls it a different vehicle (:mod:`.identity`),
- one of its regions is an implausible (part, damage) pair (:mod:`.plausibility`), or
- a finding it shows needs review,
- its capture quality is poor (blurred, under- / over-exposed, glare, vehicle too far or cut off, low
  resolution: :mod:`.quality`, :func:`quality_reasons`), or
- its photo type is uncertain (:mod:`.photo_type`, :func:`photo_type_reason`).

With the reused-photo check (:mod:`.reuse`, :func:`claims_reasons`) a photo also needs review when

- it matches a photo of another indexed case (resized, re-encoded, cropped, mirrored), naming that case,
- it duplicates another photo of its own case (also cropped or mirrored), or
- the case's EXIF data is inconsistent around it (capture dates days apart, several cameras, editing software).

The first two are *image-level* flags (:func:`image_level_reasons`): the assessment draws the
damage filter's Grad-CAM for those photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..schema import PhotoReport, ReuseMatch
from .checks import FLAGGED_VERDICTS
from .photo_type import EXTERIOR_TYPES

__all__ = ["UNASSIGNED", "finding_review", "damage_filter_reason", "different_vehicle_reason", "implausible_reason",
           "reassigned_note", "image_level_reasons", "photo_review_reasons", "quality_reasons", "photo_type_reason", "reused_photo_reason", "claims_reasons",
           "second_look_reason"]

UNASSIGNED = "unassigned"


def finding_review(part: str, c_refined: float, k_agree: float, n_missing: int, n_visible: int,
                   review_threshold: float, region_reasons: list[str] = ()) -> tuple[bool, list[str]]:
    """Whether a case-level finding needs review, and the reasons listed with it.

    Args:
        part: the finding's part (``unassigned`` for damage on no segmented part).
        c_refined: C_base · K_agree, in [0, 1].
        k_agree: photos showing the finding / photos showing its part, in (0, 1].
        n_missing, n_visible: photos showing the part but not the finding, photos showing the part.
        review_threshold: C_refined below this needs review.
        region_reasons: reasons the photos' regions of this finding were flagged (plausibility), each
            listed once; any flags the finding.
    Returns:
        (needs_review, reasons in a fixed order: C_refined, K_agree note, unassigned, region reasons).
    """
    reasons = []
    if c_refined < review_threshold:
        reasons.append(f"C_refined {c_refined:.2f} < {review_threshold:.2f}")
    if k_agree < 1.0:
        reasons.append(f"not seen in {n_missing} of {n_visible} photos showing the part")
    if part == UNASSIGNED:
        reasons.append("damage not on a segmented part")
    region = list(dict.fromkeys(region_reasons))
    reasons.extend(region)
    return c_refined < review_threshold or part == UNASSIGNED or bool(region), reasons


def part_review(c_refined: float, views_damaged: int, views_visible: int, review_threshold: float,
                damaged_photos: list[str], clean_full_views: list[str], region_reasons: list[str] = (),
                p_damaged: float | None = None, p_threshold: float | None = None) -> tuple[bool, list[str]]:
    """Whether a physical part's damage needs review (:func:`~.agreement.reconcile_parts`), and why.

    With a calibrated P(part damaged) (``p_damaged`` and ``p_threshold``, :mod:`.confidence`; issue 26)
    the part goes to review when P is below the threshold, or when every region on it was implausible
    for its part; C_refined, the views and a single-photo sighting are then stated as reasons (they are
    inputs of P), not separate flags.

    Without one (the end-to-end paper's rule, II-D-4), a part goes to review when its C_refined is below
    ``review_threshold``; when its damage shows in one photo only while full views of other perspectives
    show it clean (issue 16); or when every region on it was implausible for its part.

    Args:
        c_refined: C_base · K_agree of the part, in [0, 1].
        views_damaged, views_visible: views showing plausible damage on the part / showing the part.
        review_threshold: C_refined below this needs review (paper's rule only).
        damaged_photos: names of the photos showing the damage.
        clean_full_views: names of full-view photos of other views showing the part without damage.
        region_reasons: the implausible regions' reasons, when no region on the part is plausible.
        p_damaged: calibrated P(part damaged), in [0, 1], or None.
        p_threshold: P below this needs review (with ``p_damaged``).
    Returns:
        (needs_review, reasons in a fixed order: P or C_refined, views, single photo, implausible regions).
    """
    reasons = []
    calibrated = p_damaged is not None and p_threshold is not None
    if calibrated and p_damaged < p_threshold:
        reasons.append(f"P(damaged) {p_damaged:.2f} < {p_threshold:.2f} (C_refined {c_refined:.2f})")
    elif not calibrated and c_refined < review_threshold:
        reasons.append(f"C_refined {c_refined:.2f} < {review_threshold:.2f}")
    if views_damaged < views_visible:
        reasons.append(f"damage seen in {views_damaged} of {views_visible} views of the part")
    single = len(damaged_photos) == 1 and bool(clean_full_views)
    if single:
        names = ", ".join(Path(n).name for n in clean_full_views[:3]) + (" ..." if len(clean_full_views) > 3 else "")
        reasons.append(f"damaged in one photo only ({Path(damaged_photos[0]).name}); seen clean in "
                       f"{len(clean_full_views)} full view(s): {names}")
    region = list(dict.fromkeys(region_reasons))
    reasons.extend(region)
    if calibrated:
        return p_damaged < p_threshold or bool(region), reasons
    return c_refined < review_threshold or single or bool(region), reasons


def damage_filter_reason(verdict: str, p_damaged: float) -> str | None:
    """Why the damage filter's ``verdict`` sends a photo to review (None for ``clean`` / ``agrees``)."""
    if verdict not in FLAGGED_VERDICTS:
        return None
    if verdict == "no damage?":
        return f"damage filter calls the photo undamaged (P = {1 - p_damaged:.2f}) but damage was segmented"
    return f"damage filter sees damage (P = {p_damaged:.2f}) that segmentation did not find"


def different_vehicle_reason(distance: float, threshold: float, reference: str) -> str:
    """The review reason of a photo the same-vehicle check flags (``reference``: the majority photo)."""
    return f"different vehicle? (distance {distance:.2f} > {threshold:.2f} to {Path(reference).name})"


def implausible_reason(part: str, damage: str) -> str:
    """Why a region whose damage type cannot occur on its part (and has no plausible neighbour) needs review."""
    return f"implausible: {damage} on {part} (no plausible part touches the region)"


def second_look_reason(min_probability: float, p_damaged: float, longest_side: int | None = None) -> str:
    """Why a region found by the second look (the damage map read at P(any damage) >= ``min_probability``, or,
    with ``longest_side``, the argmax of a second damage pass at that longer side in px, because the damage filter
    gave the photo P(damaged) ``p_damaged``; :func:`carcheck.pipeline.photo.photo_detections`) needs a person."""
    how = (f"in a second pass at {longest_side} px" if longest_side is not None
           else f"at P(damage) >= {min_probability:g} (not the map's argmax)")
    return f"found {how} because the damage filter says damaged (P={p_damaged:.2f})"


def reassigned_note(damage: str, from_part: str, to_part: str) -> str:
    """The note of a region moved from an implausible part to the plausible part touching it (not a flag)."""
    return f"{damage} segmented on {from_part} (implausible) assigned to the neighbouring {to_part}"


def image_level_reasons(photo: PhotoReport, vehicle_threshold: float | None) -> list[str]:
    """The image-level review reasons of an assessed photo, in order: the damage filter's
    disagreement (its ``damage_filter``), then the same-vehicle flag (its ``vehicle_match``;
    ``vehicle_threshold`` the check's distance threshold, None when it did not run)."""
    out = []
    if photo.damage_filter is not None:
        r = damage_filter_reason(photo.damage_filter.verdict, photo.damage_filter.probability_damaged)
        if r:
            out.append(r)
    m = photo.vehicle_match
    if m is not None and not m.same_vehicle and vehicle_threshold is not None:
        out.append(different_vehicle_reason(m.distance, vehicle_threshold, m.reference))
    return out


def photo_review_reasons(photo: PhotoReport, vehicle_threshold: float | None, findings_for_review: int) -> list[str]:
    """Every review reason of one photo, in order: :func:`image_level_reasons`, its regions' reasons
    (each once, from its detections), then the count of its findings that need review (if any)."""
    out = image_level_reasons(photo, vehicle_threshold)
    out += list(dict.fromkeys(r for d in photo.detections for r in d.review_reasons))
    if findings_for_review:
        out.append(f"{findings_for_review} finding(s) seen in this photo need review")
    out += quality_reasons(photo)
    r = photo_type_reason(photo)
    if r:
        out.append(r)
    return out


def quality_reasons(photo: PhotoReport) -> list[str]:
    """One review reason per capture-quality issue of the photo (its ``quality``, :mod:`.quality`), in the
    quality module's order, each saying what to retake."""
    if photo.quality is None:
        return []
    return [f"capture: {i.reason}" for i in photo.quality.issues]


def photo_type_reason(photo: PhotoReport) -> str | None:
    """Why a photo whose type the photo-type rule is unsure of needs a look: an uncertain type, or a photo the
    first head is sure is not an exterior view that the damage-aware head sent to the search anyway (the two
    heads disagree; :mod:`.photo_type`). None when sure or unknown."""
    t = photo.photo_type
    if t is None:
        return None
    if t.uncertain:
        return f"photo type uncertain: {t.reason}"
    if t.search_exterior_damage and t.type not in EXTERIOR_TYPES:
        return f"photo type disagreement: {t.reason}"
    return None


def reused_photo_reason(match: ReuseMatch) -> str:
    """The review reason of a photo matching an indexed photo (:meth:`~.reuse.ReuseIndex.check_case`)."""
    other = Path(match.matched_photo).name
    if match.same_case:
        return f"duplicate of {other} in this case ({match.how}, hash distance {match.distance})"
    return f"photo used before: matches {other} of case {match.case_id} ({match.how}, hash distance {match.distance})"


def claims_reasons(matches: Sequence[ReuseMatch], exif: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Reused-photo review reasons per photo, in order: matches with other cases, duplicates inside the case,
    then the EXIF inconsistencies (:func:`~.reuse.exif_reasons`, photo -> reasons). Every match and every
    EXIF inconsistency flags its photo."""
    out: dict[str, list[str]] = {}
    for m in sorted(matches, key=lambda m: m.same_case):
        out.setdefault(m.photo, []).append(reused_photo_reason(m))
    for photo, reasons in exif.items():
        out.setdefault(photo, []).extend(reasons)
    return out
