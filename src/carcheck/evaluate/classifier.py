"""Classifier, out-of-distribution and verification metrics (scikit-learn underneath).

- Classification: accuracy, macro precision / recall / F1, confusion matrix, top-k.
- OOD (Vaze et al., "Open-Set Recognition: a Good Closed-Set Classifier is All You Need?",
  ICLR 2022): the maximum logit (MLS) or maximum softmax probability (MSP) of a closed-set
  classifier as the in-distribution score; AUROC with in-distribution as the positive class.
- Verification: accuracy at a distance threshold, ROC AUC, equal-error-rate threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

if TYPE_CHECKING:
    from ..models.classifier import HeadInfo

__all__ = ["classification_metrics", "per_source_accuracy", "topk_accuracy", "ood_score", "ood_auroc", "ood_threshold",
           "verification_metrics", "head_outputs", "evaluate_classifier"]


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, macro precision / recall / F1 (over the classes), per-class P/R/F1/support and the
    confusion matrix (rows = true, columns = predicted; counts and row-normalised).

    Args:
        y_true, y_pred: class indices into ``classes``.
    """
    labels = list(range(len(classes)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    rows = cm.sum(1, keepdims=True)
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_precision": float(p.mean()), "macro_recall": float(r.mean()), "macro_f1": float(f.mean()),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, c in enumerate(classes)},
        "classes": list(classes),
        "confusion": cm.tolist(),
        "confusion_normalized": np.round(cm / np.maximum(rows, 1), 4).tolist(),
    }


def topk_accuracy(logits: torch.Tensor, y_true: torch.Tensor, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` largest logits. ``logits (N, C)``, ``y_true (N,)`` int."""
    k = min(k, logits.shape[1])
    return float((logits.topk(k, dim=1).indices == y_true[:, None]).any(1).float().mean())


def ood_score(logits: torch.Tensor, kind: str = "max_logit") -> torch.Tensor:
    """In-distribution score of each row of ``logits (N, C)``: ``max_logit`` (MLS) or ``msp``.
    Higher = more in-distribution. Returns ``(N,)`` float32.

    Raises:
        ValueError: unknown kind.
    """
    logits = logits.float()
    if kind == "max_logit":
        return logits.max(1).values
    if kind == "msp":
        return logits.softmax(1).max(1).values
    raise ValueError(f"unknown OOD score {kind!r}; use max_logit or msp")


def ood_auroc(id_scores: Sequence[float], ood_scores: Sequence[float]) -> float:
    """AUROC of separating in-distribution (positive) from OOD samples by score."""
    y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    return float(roc_auc_score(y, np.r_[np.asarray(id_scores), np.asarray(ood_scores)]))


def ood_threshold(id_scores: Sequence[float], ood_scores: Sequence[float] | None = None,
                  min_tpr: float = 0.95) -> float:
    """Score threshold (accept when score >= threshold) chosen on validation scores.

    With OOD validation samples: the threshold maximising balanced accuracy
    ``(TPR + TNR) / 2`` (in-distribution = positive) among those keeping >= ``min_tpr`` of the
    in-distribution photos, i.e. not above the floor below; the sweep over every distinct score is
    ``sklearn.metrics.roc_curve`` (``drop_intermediate=False``); ties go to the lowest threshold.
    Without: the floor itself, the ``1 - min_tpr`` quantile of the in-distribution scores (keeps
    ``min_tpr`` of them, ``numpy.quantile``, linear interpolation).

    Args:
        id_scores: in-distribution scores (higher = more in-distribution, e.g. :func:`ood_score`).
        ood_scores: out-of-distribution scores, or None / empty.
        min_tpr: share of in-distribution photos the threshold must keep.
    Returns:
        the threshold, in score units.
    """
    ids = np.asarray(id_scores, dtype=float)
    floor = float(np.quantile(ids, 1 - min_tpr))
    if ood_scores is None or len(ood_scores) == 0:
        return floor
    oods = np.asarray(ood_scores, dtype=float)
    y = np.r_[np.ones(len(ids)), np.zeros(len(oods))]
    fpr, tpr, thr = roc_curve(y, np.r_[ids, oods], drop_intermediate=False)  # thresholds decreasing
    keep = thr <= floor  # drops roc_curve's leading +inf too
    # counts back from the rates, so that the rates are the exact fractions tp / n_in, tn / n_out
    tp, fp = np.rint(tpr[keep] * len(ids)), np.rint(fpr[keep] * len(oods))
    balanced = (tp / len(ids) + (len(oods) - fp) / len(oods)) / 2
    t = thr[keep][::-1]  # increasing, so argmax picks the lowest threshold of a tie
    return float(t[int(np.argmax(balanced[::-1]))])


def verification_metrics(distances: Sequence[float], same: Sequence[int], threshold: float | None = None) -> dict:
    """Pair verification from distances (smaller = more alike).

    Args:
        distances: ``(N,)`` pair distances; same: ``(N,)`` 1 for same vehicle, 0 otherwise.
        threshold: decide "same" when distance <= threshold; default: the EER threshold of
            these pairs (then the accuracy is optimistic: choose it on validation pairs).
    Returns:
        dict with ``roc_auc``, ``eer``, ``eer_threshold``, ``threshold``, ``accuracy``, ``n``.
    """
    d, y = np.asarray(distances, dtype=float), np.asarray(same, dtype=int)
    fpr, tpr, thr = roc_curve(y, -d)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    eer_t = float(-thr[i]) if np.isfinite(thr[i]) else float(d.max())
    t = eer_t if threshold is None else float(threshold)
    return {"n": int(len(d)), "roc_auc": float(roc_auc_score(y, -d)), "eer": float((fpr[i] + fnr[i]) / 2),
            "eer_threshold": eer_t, "threshold": t, "accuracy": float(((d <= t).astype(int) == y).mean())}


def head_outputs(path_or_head, paths, cache_dir: str = "runs/feature_cache", track=lambda it, **k: it,
                 backbone=None, precision: str = "auto") -> tuple[torch.Tensor, list[int], list[tuple[str, str]], HeadInfo]:
    """Outputs of an image-level head (logits or embeddings) for image files, through the
    inference path (longer side 512 px, view "full", ``precision`` resolved as the assessment does; a
    :class:`~carcheck.models.classifier.StandaloneNet` gets that same 512 px photo, as in the
    assessment, and resizes it to its input size).

    Args:
        path_or_head: a head file, or ``(ImageHead, HeadInfo)``.
        paths: image files.
        precision: ``auto`` | ``fp32`` | ``bf16`` (:func:`~carcheck.models.runtime.resolve_precision`).
    Returns:
        ``(outputs (N_ok, K) float32, indices of readable files, [(file, reason)] of the rest, info)``;
        unreadable files are listed, never raised.
    """
    from ..data.images import ImageLoadError, load_image
    from ..models.backbone import build_backbone, inference_context
    from ..models.classifier import load_head
    from ..models.features import FeatureCache
    from ..models.classifier import StandaloneNet
    from ..models.inference import to_input_tensor

    from ..models.runtime import use_bf16

    bf16 = use_bf16(precision)
    head, info = load_head(path_or_head) if not isinstance(path_or_head, tuple) else path_or_head
    head.eval()
    if isinstance(head, StandaloneNet):  # its own backbone: the assessment's 512 px photo, resized by the net
        outs, ok, bad = [], [], []
        for i, p in enumerate(track(list(paths), description="head outputs")):
            try:
                x = to_input_tensor(load_image(p))  # inference's default longer side: the shared pass's input
            except ImageLoadError as e:
                bad.append((str(p), e.reason))
                continue
            with inference_context(bf16):
                outs.append(head(x).float())
            ok.append(i)
        return (torch.cat(outs) if outs else torch.zeros(0, len(info.classes) or info.dim)), ok, bad, info
    if head.branch is None:
        feats, ok, bad = FeatureCache(cache_dir, backbone=backbone, longest=info.longest, precision=precision).get_many(
            paths, ("full",), track=track)
        with torch.no_grad():
            out = head.head(feats[:, 0]) if len(ok) else torch.zeros(0, len(info.classes) or info.dim)
        return out, ok, bad, info
    backbone = backbone or build_backbone(info.backbone)
    outs, ok, bad = [], [], []
    for i, p in enumerate(track(list(paths), description="head outputs")):
        try:
            x = to_input_tensor(load_image(p), info.longest)
        except ImageLoadError as e:
            bad.append((str(p), e.reason))
            continue
        with inference_context(bf16):
            outs.append(head(backbone(x, with_pooled=False)).float())
        ok.append(i)
    return (torch.cat(outs) if outs else torch.zeros(0, len(info.classes))), ok, bad, info


def per_source_accuracy(pred: torch.Tensor, target: torch.Tensor, sources: Sequence[str]) -> dict[str, float]:
    """Accuracy per photo source (CarDD-style filter reporting: one number per data source, so a
    filter that only learned the source shows up).

    Args:
        pred / target: ``(N,)`` int64 predicted and true class indices.
        sources: ``N`` source names, one per photo.
    Returns:
        ``{source: accuracy}`` (fraction), sources sorted by name.
    """
    out = {}
    for s in sorted(set(sources)):
        m = torch.tensor([x == s for x in sources])
        out[s] = float((pred[m] == target[m]).float().mean())
    return out


def evaluate_classifier(head_path, data, split: str | None = "test", ood_data=None,
                        cache_dir: str = "runs/feature_cache", track=lambda it, **k: it,
                        precision: str = "auto") -> dict:
    """Accuracy, macro P/R/F1, confusion, top-5 (when > 5 classes), per-source accuracy of a
    classifier head on one split of a label CSV / class folder; with ``ood_data`` (photos that
    are out of scope: a label CSV or folder, every row used) also the OOD AUROC of the max-logit
    and MSP scores and the rates at the head's stored threshold.

    Raises:
        ValueError: the split is empty or a label is not one of the head's classes.
    """
    from ..data.labels import read_labels

    rows = read_labels(data)
    if split is not None:
        rows = [r for r in rows if r.split == split]
    if not rows:
        raise ValueError(f"{data}: no rows in split {split!r}")
    from ..models.classifier import load_head

    head_info = load_head(head_path)
    info = head_info[1]
    if info.extra.get("map"):  # the head was trained through a declared mapping (e.g. SOCAR 14 -> defect)
        from dataclasses import replace

        from ..data.taxonomy import get_mapping

        m = get_mapping(*info.extra["map"])
        rows = [replace(r, label=m.map_name(r.label)) for r in rows]
        rows = [r for r in rows if r.label is not None]
    logits, ok, bad, info = head_outputs(head_info, [r.path for r in rows], cache_dir, track, precision=precision)
    idx = {c: i for i, c in enumerate(info.classes)}
    unknown = sorted({rows[i].label for i in ok} - set(idx))
    if unknown:
        raise ValueError(f"{data}: labels {unknown} are not classes of the head ({info.classes})")
    y = torch.tensor([idx[rows[i].label] for i in ok])
    pred = logits.argmax(1)
    if not ok:
        raise ValueError(f"{data}: none of the {len(rows)} photos could be read (first: {bad[0][0]}: {bad[0][1]})")
    res = classification_metrics(y.tolist(), pred.tolist(), info.classes)
    res.update(task=info.task, split=split, unreadable=bad)
    if len(info.classes) > 5:
        res["top5_accuracy"] = topk_accuracy(logits, y, 5)
    res["per_source_accuracy"] = per_source_accuracy(pred, y, [rows[i].source for i in ok])
    if ood_data is not None:
        ood_rows = read_labels(ood_data)
        ood_logits, _, ood_bad, _ = head_outputs(head_info, [r.path for r in ood_rows], cache_dir, track, precision=precision)
        res["ood"] = {"n_in": int(len(logits)), "n_out": int(len(ood_logits)), "unreadable": ood_bad}
        for kind in ("max_logit", "msp"):
            res["ood"][f"auroc_{kind}"] = ood_auroc(ood_score(logits, kind).tolist(), ood_score(ood_logits, kind).tolist())
        if info.ood:
            t, kind = info.ood["threshold"], info.ood["score"]
            res["ood"]["threshold"] = t
            res["ood"]["in_kept"] = float((ood_score(logits, kind) >= t).float().mean())
            res["ood"]["out_rejected"] = float((ood_score(ood_logits, kind) < t).float().mean())
    return res
