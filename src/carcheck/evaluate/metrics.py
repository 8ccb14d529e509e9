"""Segmentation metrics: pixel confusion matrix, per-class IoU, mIoU, paired bootstrap CI (scipy)."""

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
    """Paired bootstrap 95% CI of mIoU(A) - mIoU(B) over images (Ma et al., section II-E).

    ``scipy.stats.bootstrap`` with ``paired=True`` resamples images with replacement (the same
    images for A and B), recomputes both mIoUs from the summed per-image confusion matrices of the
    resample, and takes the percentile interval (Efron's percentile method, the 2.5th and 97.5th
    percentiles of the replicate differences: the method of the CIs already published in the
    README and model cards; BCa would need a jackknife over images and is undefined, NaN, when
    every replicate is equal).

    Args:
        cms_a, cms_b: per-image confusion matrices ``(N, C, C)`` (pixel counts) of models A and B
            on the same N images, in the same order.
        replicates: bootstrap resamples.
        seed: seed of ``numpy.random.default_rng`` that draws them.
        with_background: include class 0 in the mean.
    Returns:
        dict with ``diff`` (on all images, fraction of 1), ``ci95`` [low, high], ``replicates``,
        ``method`` (``"percentile"``).
    Raises:
        ValueError: ``cms_a`` and ``cms_b`` differ in shape.
    """
    from scipy.stats import bootstrap

    cms_a, cms_b = np.asarray(cms_a), np.asarray(cms_b)
    if cms_a.shape != cms_b.shape:
        raise ValueError(f"per-image confusion matrices differ in shape: {cms_a.shape} vs {cms_b.shape}")
    n = len(cms_a)

    def diff(ia: np.ndarray, ib: np.ndarray, axis: int = -1) -> np.ndarray:
        # ia, ib: (..., n) image indices of each resample (equal: paired); one difference per resample
        ia, ib = np.atleast_2d(ia), np.atleast_2d(ib)
        return np.array([miou(cms_a[i].sum(0), with_background) - miou(cms_b[j].sum(0), with_background)
                         for i, j in zip(ia.reshape(-1, n), ib.reshape(-1, n))]).reshape(ia.shape[:-1])

    idx = np.arange(n)
    res = bootstrap((idx, idx), diff, paired=True, vectorized=True, n_resamples=replicates, batch=256,
                    confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed))
    return {"diff": miou(cms_a.sum(0), with_background) - miou(cms_b.sum(0), with_background),
            "ci95": [float(res.confidence_interval.low), float(res.confidence_interval.high)],
            "replicates": replicates, "method": "percentile"}
