"""Segmentation evaluation as the papers do it.

* Semantic (Ma et al., section II-E): pixel confusion matrix (counts and row-normalised),
  per-class IoU, mIoU with and without background, per-image confusion matrices for the
  bootstrap CI of an mIoU difference.
* Damage instances (CarDD, section IV-B): by default the regions the shipped fusion produces
  (:func:`carcheck.pipeline.photo.fusion_detections`, handed in by the caller: connected components of one (part, damage)
  pair over the part model's map where the model has a ``parts`` head, with the fusion's minimum
  area; score C_base = mean damage probability), or plain connected components of the damage map;
  or the CenterNet instance head on the damage decoder (``head``, :mod:`carcheck.models.instances`: boxes from
  its centre heatmap, masks from the damage map inside each box);
  evaluated with pycocotools COCOeval (box and mask AP, AP50, AP75, AP_S/M/L and per-class AP as
  CarDD's Table V) with CarDD's area cuts: small < 128², medium < 256², large >= 256² px.
* Salient-object maps (CarDD, section IV-C, Table VIII): the damage probability map
  ``1 - P(no damage)`` against the binary damage mask, scored by pysodmetrics: F_beta (beta² = 0.3;
  max / mean / adaptive over thresholds), weighted F_beta, S-measure, E-measure (max / mean /
  adaptive) and MAE.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.check import MEDIUM_AREA, SMALL_AREA
from ..data.coco_dataset import CocoSegmentationDataset
from ..data.taxonomy import IGNORE, get_taxonomy
from ..models.inference import segment
from ..models.segmentation import CarSegmenter
from .metrics import confusion_matrix, iou_from_confusion, miou

__all__ = ["SegEvalResult", "evaluate_segmentation", "components_as_detections", "encode_mask",
           "coco_instance_ap", "SodAccumulator"]


@dataclass
class SegEvalResult:
    """Metrics of one task on one dataset.

    ``confusion`` rows are ground truth, columns prediction (pixels); ``per_image`` holds the
    per-image matrices ``(N, C, C)`` for bootstrap comparisons (not serialised).
    """

    task: str
    taxonomy: str
    classes: list[str]
    confusion: np.ndarray
    per_image: np.ndarray = field(repr=False)
    instance_ap: dict | None = None
    images: int = 0
    sod: dict | None = None
    instances_from: str | None = None
    #: median ms per photo of the instance step alone (components / fusion / head incl. its convolutions), or None
    instance_ms: float | None = None

    def to_dict(self) -> dict:
        iou = iou_from_confusion(self.confusion)
        rows = self.confusion.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.where(rows > 0, self.confusion / rows, 0.0)
        return {
            "task": self.task, "taxonomy": self.taxonomy, "images": self.images, "classes": self.classes,
            "iou": {c: (None if np.isnan(v) else round(float(v), 4)) for c, v in zip(self.classes, iou)},
            "miou": round(miou(self.confusion), 4), "miou_no_bg": round(miou(self.confusion, False), 4),
            "confusion": self.confusion.tolist(), "confusion_row_normalised": np.round(norm, 4).tolist(),
            "instance_ap": self.instance_ap, "instances_from": self.instances_from, "sod": self.sod,
            "instance_ms_per_photo": None if self.instance_ms is None else round(self.instance_ms, 2),
        }


def components_as_detections(probs: np.ndarray, min_area: int = 16) -> list[tuple[int, np.ndarray, float]]:
    """Instances from a semantic prediction: 8-connected components of each class's argmax mask.

    Args:
        probs: ``(C, H, W)`` float class probabilities (class 0 = background).
        min_area: components smaller than this many pixels are dropped.
    Returns:
        ``[(class_index, mask (H, W) bool, score)]``, score = mean probability of that class over the component.
    """
    label = probs.argmax(0)
    out = []
    for c in range(1, probs.shape[0]):
        m = (label == c).astype(np.uint8)
        if not m.any():
            continue
        n, cc = cv2.connectedComponents(m, connectivity=8)
        for k in range(1, n):
            comp = cc == k
            if comp.sum() >= min_area:
                out.append((c, comp, float(probs[c][comp].mean())))
    return out


class SodAccumulator:
    """The five salient-object metrics of CarDD's Table VIII through pysodmetrics, accumulated
    image by image: ``step(prob, gt)`` with ``prob`` float ``(H, W)`` in [0, 1] (the damage
    probability map) and ``gt`` bool ``(H, W)`` (any damage); ``results()`` ->
    ``{"F_beta_max", "F_beta_mean", "F_beta_adaptive", "weighted_F_beta", "S_measure",
    "E_measure_max", "E_measure_mean", "E_measure_adaptive", "MAE", "images"}`` (fractions)."""

    def __init__(self) -> None:
        import warnings

        import py_sod_metrics as sod

        with warnings.catch_warnings():  # Fmeasure's own deprecation notice; its results are the reference ones
            warnings.simplefilter("ignore")
            self._fm = sod.Fmeasure()
        self._wfm, self._sm, self._em, self._mae = sod.WeightedFmeasure(), sod.Smeasure(), sod.Emeasure(), sod.MAE()
        self.images = 0

    def step(self, prob: np.ndarray, gt: np.ndarray) -> None:
        pred = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
        g = gt.astype(np.uint8) * 255
        for m in (self._fm, self._wfm, self._sm, self._em, self._mae):
            m.step(pred=pred, gt=g)
        self.images += 1

    def results(self) -> dict:
        fm, em = self._fm.get_results()["fm"], self._em.get_results()["em"]
        r = {"F_beta_max": float(np.max(fm["curve"])), "F_beta_mean": float(np.mean(fm["curve"])),
             "F_beta_adaptive": float(fm["adp"]), "weighted_F_beta": float(self._wfm.get_results()["wfm"]),
             "S_measure": float(self._sm.get_results()["sm"]), "E_measure_max": float(np.max(em["curve"])),
             "E_measure_mean": float(np.mean(em["curve"])), "E_measure_adaptive": float(em["adp"]),
             "MAE": float(self._mae.get_results()["mae"])}
        return {**{k: round(v, 4) for k, v in r.items()}, "images": self.images}


def encode_mask(mask: np.ndarray) -> dict:
    """COCO RLE (``{"size", "counts"}``, counts as bytes) of a bool ``(H, W)`` mask: what detections are kept as
    while a split is evaluated (a full mask per detection would need gigabytes for 100 detections a photo)."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def coco_instance_ap(gt: list[tuple[int, list[tuple[int, np.ndarray]]]], dets: list[tuple[int, int, np.ndarray, float]],
                     classes: Sequence[str], sizes: dict[int, tuple[int, int]]) -> dict:
    """COCO box and mask AP through pycocotools with CarDD's area ranges.

    Args:
        gt: ``[(image_id, [(class_index, mask bool (H, W))])]``.
        dets: ``[(image_id, class_index, mask, score[, box])]``, mask bool ``(H, W)`` or its COCO RLE
            (:func:`encode_mask`); ``box`` ``(x, y, w, h)`` px, the detector's own box for box AP (default: the mask's
            bounding box).
        classes: names of class indices 1..C-1 (index 0 = background, excluded).
        sizes: image_id -> (height, width).
    Returns:
        ``{"segm": {...}, "bbox": {...}}``, each with AP, AP50, AP75, AP_S, AP_M, AP_L (fractions; -1 when undefined).
    """
    images = [{"id": i, "height": sizes[i][0], "width": sizes[i][1]} for i in sizes]
    cats = [{"id": k, "name": n} for k, n in enumerate(classes, 1)]
    anns, aid = [], 1
    for img_id, objs in gt:
        for c, m in objs:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            area = float(mask_utils.area(rle))
            if area < 1:
                continue
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({"id": aid, "image_id": img_id, "category_id": int(c), "segmentation": rle, "area": area,
                         "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
            aid += 1
    results = []
    for img_id, c, m, s, *box in dets:
        rle = dict(m) if isinstance(m, dict) else mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        if isinstance(rle["counts"], bytes):
            rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": img_id, "category_id": int(c), "segmentation": rle,
                        "bbox": list(mask_utils.toBbox(rle)), "score": float(s)})
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        coco_gt.createIndex()
        for iou_type in ("segm", "bbox"):
            if not results or not anns:
                out[iou_type] = {k: -1.0 for k in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L",
                                               *(f"AP_{n}" for n in classes))}
                continue
            coco_dt = coco_gt.loadRes(results)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.params.areaRng = [[0, 1e10], [0, SMALL_AREA], [SMALL_AREA, MEDIUM_AREA], [MEDIUM_AREA, 1e10]]
            ev.params.maxDets = [1, 10, 100]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            s = ev.stats
            out[iou_type] = {"AP": s[0], "AP50": s[1], "AP75": s[2], "AP_S": s[3], "AP_M": s[4], "AP_L": s[5]}
            # per-class AP (CarDD Table V): precision (T, R, K, A, M) at area "all", 100 detections
            prec = ev.eval["precision"][:, :, :, 0, -1]
            for k, name in enumerate(classes):
                p = prec[:, :, k]
                out[iou_type][f"AP_{name}"] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    out["area_ranges_px2"] = {"small": [0, SMALL_AREA], "medium": [SMALL_AREA, MEDIUM_AREA], "large": [MEDIUM_AREA, None]}
    return {k: ({m: round(float(x), 4) for m, x in v.items()} if k != "area_ranges_px2" else v) for k, v in out.items()}


def evaluate_segmentation(model: CarSegmenter, annotations: Sequence[str], task: str, taxonomy: str | None = None,
                          instances: bool = False, longest: int = 512, precision: str = "auto",
                          track: Callable = lambda it, **k: it, on_error: Callable[[str], None] = print,
                          sod: bool = False, instances_from: str = "fusion", fusion: Callable | None = None,
                          instance_head=None) -> SegEvalResult:
    """Evaluate one head of ``model`` on COCO files, at the files' full resolution.

    Args:
        annotations: COCO JSON paths (images resolved as in :class:`~carcheck.data.coco.CocoSource`).
        task: the head, e.g. ``"parts"`` or ``"damage"``.
        taxonomy: ground-truth taxonomy (default: the head's own). A coarser taxonomy with a
            declared mapping from the head's (e.g. ``damage_binary`` for a ``damage_type`` head)
            evaluates the mapped prediction.
        instances: also compute COCO instance AP.
        instances_from: ``fusion`` (default: the regions the shipped fusion produces, over the
            model's ``parts`` head where it has one: the ``fusion`` function) or ``components``
            (connected components of the damage map, :func:`components_as_detections`) or ``head`` (the CenterNet
            instance head on the damage model's decoder, ``instance_head``; the ``damage`` task in its own taxonomy only).
        instance_head: a :class:`~carcheck.models.instances.HeadInstances` for ``head`` instances (default: the
            shipped head, :func:`~carcheck.models.instances.load_instance_head`).
        fusion: the assessment's ``(damage_prob, part_prob | None, damage_names, part_names) -> [(class,
            mask, score)]``, :func:`carcheck.pipeline.photo.fusion_detections`, needed for fusion
            instances. Its callers hand it in: evaluate sits below the pipeline and imports none of it.
        sod: also the salient-object metrics of the damage map (:class:`SodAccumulator`).
        longest: network input size of the longer side, px (CarDD's native 640 for its photos).
        precision: ``auto`` | ``fp32`` | ``bf16`` (:func:`~carcheck.models.runtime.resolve_precision`).
        on_error: called with a message for each unreadable image (it is skipped, not fatal).

    Raises:
        KeyError: unknown task. ValueError: unknown ``instances_from``, fusion instances without ``fusion``, or head
            instances of another task or taxonomy than ``damage`` in the head's.
    """
    import time

    from ..data.taxonomy import get_mapping

    if instances_from not in ("fusion", "components", "head"):
        raise ValueError(f"instances_from must be 'fusion', 'components' or 'head', not {instances_from!r}")
    if instances and instances_from == "fusion" and fusion is None:
        raise ValueError("fusion instances need fusion=carcheck.pipeline.photo.fusion_detections")
    from ..models.runtime import use_bf16

    bf16 = use_bf16(precision)
    head_tax = model.taxonomies.get(task)
    if head_tax is None:
        raise KeyError(f"model has no head {task!r}; heads: {list(model.taxonomies)}")
    taxonomy = taxonomy or head_tax
    tax = get_taxonomy(taxonomy)
    lut = np.array(get_mapping(head_tax, taxonomy).lut()) if taxonomy != head_tax else None
    use_head = instances and instances_from == "head"
    if use_head:
        if task != "damage" or lut is not None:
            raise ValueError("head instances are the damage head's, in its own taxonomy (task damage, no --taxonomy)")
        if instance_head is None:
            from ..models.instances import load_instance_head

            instance_head = load_instance_head()
    ds = CocoSegmentationDataset(list(annotations), taxonomy)
    n_cls = tax.num_classes + 1
    per_image, gt_inst, dets, sizes, inst_s = [], [], [], {}, []
    use_parts = instances and instances_from == "fusion" and task != "parts" and "parts" in model.taxonomies
    part_names = list(get_taxonomy(model.taxonomies["parts"]).classes) if use_parts else []
    sod_acc = SodAccumulator() if sod else None
    for i in track(range(len(ds)), description=f"evaluating {task} ({taxonomy})"):
        try:
            image, gt, insts = ds.load(i)
        except Exception as e:  # one bad image must not end the evaluation
            on_error(f"skipped: {e}")
            continue
        if use_head:
            probs, head_x, in_hw, t_head = _damage_pass_with_head_input(model, image, longest, bf16)
        else:
            out = segment(model, image, longest=longest, bf16=bf16, tasks=[task, "parts"] if use_parts else [task])
        probs = probs if use_head else out[task].numpy()
        if lut is not None:
            merged = np.zeros((n_cls, *probs.shape[1:]), dtype=np.float32)
            for src, dst in enumerate(lut):
                merged[dst] += probs[src]
            probs = merged
        pred = probs.argmax(0)
        per_image.append(confusion_matrix(pred, gt, n_cls))
        if sod_acc is not None:
            sod_acc.step(1.0 - probs[0], (gt > 0) & (gt != 255))
        if instances:
            h, w = gt.shape
            sizes[i] = (h, w)
            objs = []
            for inst in insts:
                c = ds.category_map.get(inst.category)
                if c is not None and c != IGNORE:  # an ignore-labelled instance is no object (as in training)
                    objs.append((tax.index(c) + 1, inst.to_mask(h, w)))
            gt_inst.append((i, objs))
            t0 = time.perf_counter()
            if use_head:
                found = instance_head(head_x, pred, in_hw, probs)
            elif instances_from == "fusion":
                found = fusion(probs, out["parts"].numpy() if use_parts else None, tax.classes, part_names)
            else:
                found = components_as_detections(probs)
            inst_s.append(time.perf_counter() - t0 + (t_head if use_head else 0.0))
            dets += [(i, f[0], encode_mask(f[1]), *f[2:]) for f in found]
    per_image_arr = np.stack(per_image) if per_image else np.zeros((0, n_cls, n_cls), dtype=np.int64)
    ap = coco_instance_ap(gt_inst, dets, tax.classes, sizes) if instances else None
    return SegEvalResult(task, taxonomy, list(tax.names_with_background), per_image_arr.sum(0), per_image_arr, ap,
                         len(per_image), sod=sod_acc.results() if sod_acc is not None else None,
                         instances_from=(instances_from + ("+parts" if use_parts else "")) if instances else None,
                         instance_ms=1000 * float(np.median(inst_s)) if inst_s else None)


def _damage_pass_with_head_input(model, image: np.ndarray, longest: int, bf16: bool):
    """One pass of ``model`` for head instances: the damage probabilities as :func:`segment` gives them (logits
    upsampled to the input, then to the photo, softmax) and the instance head's input from the same decoder pass.

    Returns ``(probs (C, H, W) float32, head_x (1, 103, h/8, w/8) float32, (input_h, input_w), head_input_s)``,
    ``head_input_s`` the seconds of the pooling that the head adds to the semantic pass.
    """
    import time

    import torch
    import torch.nn.functional as F

    from ..models.backbone import inference_context
    from ..models.inference import to_input_tensor
    from ..models.instances import damage_decoder_pass, head_input

    x = to_input_tensor(image, longest)
    h, w = image.shape[:2]
    with inference_context(bf16):
        y, logits = damage_decoder_pass(model, model.backbone(x).features)
        t0 = time.perf_counter()
        hx = head_input(y, logits)
        t_in = time.perf_counter() - t0
        up = F.interpolate(logits, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        probs = F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)[0].softmax(0).numpy()
    return probs, hx, tuple(x.shape[-2:]), t_in
