"""One photo's model outputs -> its detections, pure (no models, no I/O): the rules of the assessment that
run per photo, in one place.

- :func:`photo_regions`: the part and damage maps -> damaged parts D_k: the door-anchored ends and the
  one-end-of-the-car rule on the part map (:mod:`.part_ends`), the fusion (:mod:`.fusion`), optionally the
  plausibility step (:mod:`.plausibility`).
- :func:`fusion_detections`: the same regions as scored instances; what ``carcheck evaluate segmentation``
  scores (:func:`carcheck.evaluate.segmentation.evaluate_segmentation` is handed this function by its callers:
  evaluate sits below the pipeline in the layers and imports none of it).
- :func:`photo_detections`: the regions of an assessed photo as the report states them (sizes, classes,
  boxes and areas in the photo's own pixels) and the per-photo input of the case-level reconciliation.
- :func:`image_level`: damage filter, car state, severity and make/model of one photo from its head outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..schema import AssessConfig, DamageFilter, DamageInstance, FusionConfig, PhotoDetection, PhotoReport
from . import checks
from .agreement import PhotoFindings
from .fusion import Region, damaged_parts, low_threshold_label, visible_parts
from .image_heads import ImageHeads, PhotoHeadOutputs, head_result
from .instances import photo_instances
from .part_ends import consistent_ends, door_anchored_ends
from .plausibility import apply_plausibility
from .review import second_look_reason
from .size import region_size_cm, scale_area, scale_bbox, size_class

__all__ = ["photo_regions", "fusion_detections", "PhotoDetections", "photo_detections", "image_level"]


def photo_regions(part_prob: np.ndarray, damage_prob: np.ndarray, part_names: Sequence[str],
                  damage_names: Sequence[str], cfg: FusionConfig, plausibility=None, with_plausibility: bool = True,
                  label_dtype=np.uint8, damage_label: np.ndarray | None = None,
                  part_label: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[Region]]:
    """(part label map, damage label map, damaged parts D_k) of one photo at network resolution.

    Args:
        part_prob / damage_prob: softmax maps ``(P + 1, H, W)`` / ``(D + 1, H, W)`` (index 0 background).
        cfg: the fusion config (``door_end_min_share``: door-anchored ends, ``end_dominance``: the one-end rule,
            None off; ``plausibility`` mode).
        plausibility: the taxonomies' damage x part table (None: none declared, regions unchanged).
        with_plausibility: run the plausibility step at all (evaluation scores masks, not parts: False).
        label_dtype: dtype of the label maps (the assessment draws uint8 maps).
        damage_label: the damage label map to use instead of the argmax of ``damage_prob`` (the second look).
        part_label: the part label map of an earlier call on the same ``part_prob`` (the second look reads the
            damage again, the parts are the same), None: computed here.
    """
    if part_label is None:
        part_label = part_prob.argmax(0).astype(label_dtype)
        if part_names and cfg.door_end_min_share is not None:  # each end as its nearest door says (a wreck's rear)
            part_label = door_anchored_ends(part_label, ["background", *part_names], cfg.door_end_min_share,
                                            cfg.door_end_max_distance)
        if part_names and cfg.end_dominance is not None:  # one end of the car per photo (a trunk read as a hood)
            part_label = consistent_ends(part_label, ["background", *part_names], cfg.end_dominance)
    damage_label = (damage_prob.argmax(0) if damage_label is None else damage_label).astype(label_dtype)
    regions = damaged_parts(part_prob, damage_prob, list(part_names), list(damage_names), cfg, part_label, damage_label)
    if with_plausibility:
        regions = apply_plausibility(regions, part_label, list(part_names), plausibility, cfg.plausibility,
                                     cfg.plausibility_dilation_px)
    return part_label, damage_label, regions


def fusion_detections(damage_prob: np.ndarray, part_prob: np.ndarray | None, damage_names: Sequence[str],
                      part_names: Sequence[str] = (), cfg: FusionConfig | None = None
                      ) -> list[tuple[int, np.ndarray, float]]:
    """Instances as the shipped assessment finds them: the regions of :func:`photo_regions` (one per
    connected (part, damage) component above the fusion's minimum area, score C_base), each with its pixel
    mask, after the one-end-of-the-car rule. The plausibility step (which moves a region to another part
    or flags it) is not applied: it changes parts, not the masks scored here.

    Args:
        damage_prob: ``(D + 1, H, W)`` float probabilities (index 0 no damage).
        part_prob: ``(P + 1, H, W)`` float part probabilities, or None (no part model: every region is
            ``unassigned``, split only by damage class).
        damage_names / part_names: class names without background.
        cfg: the fusion config (default: the shipped one).
    Returns:
        ``[(damage class index 1..D, mask (H, W) bool, score)]``.
    """
    cfg = cfg or FusionConfig()
    h, w = damage_prob.shape[1:]
    if part_prob is None:
        part_prob, part_names = np.ones((1, h, w), np.float32), []
    _, _, regions = photo_regions(part_prob, damage_prob, part_names, damage_names, cfg, None, False, np.int64)
    index = {n: i for i, n in enumerate(damage_names, 1)}
    return [(index[r.damage], np.asarray(r.mask, bool), float(r.c_base)) for r in regions]


@dataclass
class PhotoDetections:
    """An assessed photo's detections: what its report entry states and what the case reconciles."""

    part_label: np.ndarray  # (h, w) uint8 at network resolution (after the one-end rule)
    damage_label: np.ndarray  # (h, w) uint8
    visible: list[str]
    closeup: bool
    detections: list[PhotoDetection]
    findings: PhotoFindings
    instances: list[DamageInstance] = field(default_factory=list)


def photo_detections(name: str, parts: np.ndarray, damage: np.ndarray, part_names: Sequence[str],
                     damage_names: Sequence[str], cfg: AssessConfig, plausibility, width: int, height: int,
                     p_damaged: float | None = None,
                     damage_second: Callable[[], np.ndarray] | None = None,
                     exterior_view: bool = True) -> PhotoDetections:
    """The detections of one assessed photo from its softmax maps.

    Areas and boxes are scaled from network resolution to the ``width`` x ``height`` array the models were
    given; several regions of one (part, damage) pair: the part's damaged share is their sum. The damage
    instances (:mod:`.instances`) come with them. ``p_damaged``: the damage filter's P(damaged) of the photo;
    where the argmax finds no damage and it reaches ``fusion.missed_damage_filter_at_least``, the map is read again
    at ``fusion.missed_damage_min_probability`` (:func:`~.fusion.low_threshold_label`) and each region found so
    says why in its review reasons (its C_base, a class probability the argmax did not pick, stays <= 0.5, so the
    paper's rule sends it to review). With ``damage_second`` (a function returning the softmax ``(D + 1, H, W)`` of
    a second damage pass at ``fusion.missed_damage_longest_side``, brought to the part map's ``(H, W)``; called only
    when the second look runs) that map's argmax is read first, and the map at ``missed_damage_min_probability``
    only where it finds nothing. Regions of either second look say so in their review reasons and count as views
    like any other, and the photo's findings are marked (``PhotoFindings.second_look``): a finding or part that
    only second looks show goes to review whatever its C_refined. ``exterior_view``: the photo-type head calls it an
    exterior view (False: searched although typed otherwise; its part map then counts only where it shows damage).
    """
    fc = cfg.fusion
    part_label, damage_label, regions = photo_regions(parts, damage, part_names, damage_names, fc, plausibility)
    second = (not regions and p_damaged is not None and fc.missed_damage_filter_at_least is not None
              and p_damaged >= fc.missed_damage_filter_at_least)
    hires = None
    if second and damage_second is not None:
        finer = damage_second()
        _, damage_label, regions = photo_regions(parts, finer, part_names, damage_names, fc, plausibility,
                                                 part_label=part_label)
        if regions:
            damage, hires = finer, fc.missed_damage_longest_side
    if second and hires is None:
        _, damage_label, regions = photo_regions(
            parts, damage, part_names, damage_names, fc, plausibility, part_label=part_label,
            damage_label=low_threshold_label(damage, fc.missed_damage_min_probability))
    why = second_look_reason(fc.missed_damage_min_probability, p_damaged, hires) if second else None
    vis = visible_parts(part_label, list(part_names), fc)
    closeup = len(vis) <= fc.closeup_max_parts
    nh, nw = part_label.shape
    sx, sy = width / nw, height / nh
    dets = []
    per_key: dict[tuple[str, str], list] = {}  # (part, damage) -> [max C_base, summed fraction of the part]
    region_reasons: dict[tuple[str, str], list[str]] = {}
    for r in regions:
        frac_part = r.area / max(1, r.part_area)
        dets.append(PhotoDetection(
            part=r.part, damage=r.damage, area_px=scale_area(r.area, sx, sy),
            area_fraction_of_part=round(frac_part, 4), area_fraction_of_image=round(r.area / (nh * nw), 5),
            size_class=size_class(frac_part, fc, closeup), c_base=round(r.c_base, 4),
            bbox_xywh=scale_bbox(r.bbox, sx, sy), reassigned_from=r.reassigned_from,
            review_reasons=list(r.review_reasons) + ([why] if why else []),
            size_cm=region_size_cm(r.mask, part_label, list(part_names), r.part, cfg.size)))
        agg = per_key.setdefault((r.part, r.damage), [0.0, 0.0])
        agg[0] = max(agg[0], r.c_base)
        agg[1] += frac_part
        if r.review_reasons:
            region_reasons.setdefault((r.part, r.damage), []).extend(r.review_reasons)
    findings = {k: (c, f, size_class(f, fc, closeup)) for k, (c, f) in per_key.items()}
    instances = photo_instances(name, damage_label, damage, part_label, part_names, damage_names, regions,
                                fc.min_region_fraction, width, height, cfg.size, fc.instance_split_core_fraction,
                                fc.instance_split_types)
    return PhotoDetections(part_label, damage_label, vis, closeup, dets,
                           PhotoFindings(name, set(vis), findings, region_reasons, closeup, why if regions else None,
                                         exterior_view), instances)


def image_level(report: PhotoReport, outputs: PhotoHeadOutputs, heads: ImageHeads, cfg: AssessConfig,
                precision: str) -> None:
    """Damage filter, car state, severity and make/model of one assessed photo (in place), by the rules of
    :mod:`.checks`. Review reasons are added later, by :mod:`.review`."""
    has_damage = bool(report.detections)
    p_damaged = heads.probability(outputs, "damaged", "damaged")
    if p_damaged is not None:
        verdict = checks.damage_filter_verdict(p_damaged, has_damage, cfg.clean_threshold, cfg.damaged_threshold)
        report.damage_filter = DamageFilter(probability_damaged=round(p_damaged, 4), verdict=verdict)
    for task in heads.state_tasks():
        if task == "severity" and not checks.severity_applies(has_damage, p_damaged, cfg.severity_min_p_damaged):
            continue  # a severity grade only means something for a damaged car
        report.car_state[task] = head_result(task, outputs.logits[task], heads.info(task))
    if heads.has("make_model"):
        res = head_result("make_model", outputs.logits["make_model"], heads.info("make_model"))
        if heads.has("make_model_ood"):
            mls = float(outputs.logits["make_model_ood"].max())
            res.ood_score = round(mls, 4)
            if checks.ood_out_of_scope(mls, heads.info("make_model_ood").ood_threshold(precision)):
                res.out_of_scope, res.label, res.probability = True, None, None
        report.make_model = res
