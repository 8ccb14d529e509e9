"""Segmentation evaluation as the papers do it.

* Semantic (Ma et al., section II-E): pixel confusion matrix (counts and row-normalised),
  per-class IoU, mIoU with and without background, per-image confusion matrices for the
  bootstrap CI of an mIoU difference.
* Damage instances (CarDD, section IV-B): connected components of the predicted mask per
  class, scored by the component's mean class probability, evaluated with pycocotools
  COCOeval (box and mask AP, AP50, AP75) with CarDD's area cuts: small < 128², medium
  < 256², large >= 256² px.
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
from ..data.coco import CocoSegmentationDataset
from ..data.taxonomy import get_taxonomy
from ..models.inference import segment
from ..models.segmentation import CarSegmenter
from .metrics import confusion_matrix, iou_from_confusion, miou

__all__ = ["SegEvalResult", "evaluate_segmentation", "components_as_detections", "coco_instance_ap"]


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
            "instance_ap": self.instance_ap,
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


def coco_instance_ap(gt: list[tuple[int, list[tuple[int, np.ndarray]]]], dets: list[tuple[int, int, np.ndarray, float]],
                     classes: Sequence[str], sizes: dict[int, tuple[int, int]]) -> dict:
    """COCO box and mask AP through pycocotools with CarDD's area ranges.

    Args:
        gt: ``[(image_id, [(class_index, mask bool (H, W))])]``.
        dets: ``[(image_id, class_index, mask bool (H, W), score)]``.
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
    for img_id, c, m, s in dets:
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
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
                out[iou_type] = {k: -1.0 for k in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")}
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
    out["area_ranges_px2"] = {"small": [0, SMALL_AREA], "medium": [SMALL_AREA, MEDIUM_AREA], "large": [MEDIUM_AREA, None]}
    return {k: ({m: round(float(x), 4) for m, x in v.items()} if k != "area_ranges_px2" else v) for k, v in out.items()}


def evaluate_segmentation(model: CarSegmenter, annotations: Sequence[str], task: str, taxonomy: str | None = None,
                          instances: bool = False, longest: int = 512, precision: str = "auto",
                          track: Callable = lambda it, **k: it, on_error: Callable[[str], None] = print) -> SegEvalResult:
    """Evaluate one head of ``model`` on COCO files, at the files' full resolution.

    Args:
        annotations: COCO JSON paths (images resolved as in :class:`~carcheck.data.coco.CocoSource`).
        task: the head, e.g. ``"parts"`` or ``"damage"``.
        taxonomy: ground-truth taxonomy (default: the head's own). A coarser taxonomy with a
            declared mapping from the head's (e.g. ``damage_binary`` for a ``damage_type`` head)
            evaluates the mapped prediction.
        instances: also compute COCO instance AP from connected components.
        precision: ``auto`` | ``fp32`` | ``bf16`` (:func:`~carcheck.models.runtime.resolve_precision`).
        on_error: called with a message for each unreadable image (it is skipped, not fatal).

    Raises:
        KeyError: unknown task.
    """
    from ..data.taxonomy import get_mapping
    from ..models.runtime import use_bf16

    bf16 = use_bf16(precision)
    head_tax = model.taxonomies.get(task)
    if head_tax is None:
        raise KeyError(f"model has no head {task!r}; heads: {list(model.taxonomies)}")
    taxonomy = taxonomy or head_tax
    tax = get_taxonomy(taxonomy)
    lut = np.array(get_mapping(head_tax, taxonomy).lut()) if taxonomy != head_tax else None
    ds = CocoSegmentationDataset(list(annotations), taxonomy)
    n_cls = tax.num_classes + 1
    per_image, gt_inst, dets, sizes = [], [], [], {}
    for i in track(range(len(ds)), description=f"evaluating {task} ({taxonomy})"):
        try:
            image, gt, insts = ds.load(i)
        except Exception as e:  # one bad image must not end the evaluation
            on_error(f"skipped: {e}")
            continue
        probs = segment(model, image, longest=longest, bf16=bf16, tasks=[task])[task].numpy()
        if lut is not None:
            merged = np.zeros((n_cls, *probs.shape[1:]), dtype=np.float32)
            for src, dst in enumerate(lut):
                merged[dst] += probs[src]
            probs = merged
        pred = probs.argmax(0)
        per_image.append(confusion_matrix(pred, gt, n_cls))
        if instances:
            h, w = gt.shape
            sizes[i] = (h, w)
            objs = []
            for inst in insts:
                c = ds.category_map.get(inst.category)
                if c is not None:
                    objs.append((tax.index(c) + 1, inst.to_mask(h, w)))
            gt_inst.append((i, objs))
            dets += [(i, c, m, s) for c, m, s in components_as_detections(probs)]
    per_image_arr = np.stack(per_image) if per_image else np.zeros((0, n_cls, n_cls), dtype=np.int64)
    ap = coco_instance_ap(gt_inst, dets, tax.classes, sizes) if instances else None
    return SegEvalResult(task, taxonomy, list(tax.names_with_background), per_image_arr.sum(0), per_image_arr, ap,
                         len(per_image))
