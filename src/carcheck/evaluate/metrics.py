"""Segmentation metrics: pixel confusion matrix, per-class IoU, mIoU, bootstrap CI."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["confusion_matrix", "iou_from_confusion", "miou", "bootstrap_miou_difference"]


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """Pixel confusion matrix, rows = ground truth, columns = prediction.

    Args:
        pred, target: integer label maps of the same shape.
    Returns:
        ``(num_classes, num_classes)`` int64 counts of pixels.
    """
    p = torch.as_tensor(pred).reshape(-1).long()
    t = torch.as_tensor(target).reshape(-1).long()
    keep = t != ignore_index
    idx = t[keep] * num_classes + p[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).numpy()


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) (Everingham et al., PASCAL VOC); NaN where the class
    is absent from both ground truth and prediction. Returns ``(C,)`` float64."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def miou(cm: np.ndarray, with_background: bool = True) -> float:
    """Mean IoU over classes present (NaN-mean); class 0 is background."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou if with_background else iou[1:]))


def bootstrap_miou_difference(cms_a: np.ndarray, cms_b: np.ndarray, replicates: int = 5000, seed: int = 0,
                              with_background: bool = True) -> dict:
    """Bootstrap 95% CI of mIoU(A) - mIoU(B), resampling images (Ma et al., section II-E).

    Args:
        cms_a, cms_b: per-image confusion matrices ``(N, C, C)`` of models A and B on the same images.
    Returns:
        dict with ``diff`` (on all images), ``ci95`` [low, high], ``replicates``.
    """
    rng = np.random.default_rng(seed)
    n = len(cms_a)
    diffs = np.empty(replicates)
    for r in range(replicates):
        idx = rng.integers(0, n, n)
        diffs[r] = miou(cms_a[idx].sum(0), with_background) - miou(cms_b[idx].sum(0), with_background)
    return {"diff": miou(cms_a.sum(0), with_background) - miou(cms_b.sum(0), with_background),
            "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))], "replicates": replicates}
