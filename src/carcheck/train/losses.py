"""Segmentation losses: cross-entropy, soft Dice, focal; selectable by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dice_loss", "focal_loss", "segmentation_loss", "LOSSES"]


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, eps: float = 1.0) -> torch.Tensor:
    """Multi-class soft Dice loss (Milletari et al., V-Net, 2016, eq. 1), averaged over the
    classes present in the batch's target or prediction.

    Args:
        logits: ``(B, C, H, W)`` float.
        target: ``(B, H, W)`` int64 class indices; ``ignore_index`` pixels are excluded.
    Returns:
        scalar float tensor, ``1 - mean_c dice_c``.
    """
    valid = (target != ignore_index).unsqueeze(1)
    prob = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float() * valid
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None,
               ignore_index: int = 255) -> torch.Tensor:
    """Focal loss (Lin et al., ICCV 2017, eq. 5) per pixel, mean over valid pixels.

    Args:
        logits: ``(B, C, H, W)`` or ``(B, C)``; target: matching int64 indices.
        weight: optional per-class alpha ``(C,)``.
    """
    logp = F.log_softmax(logits.float(), 1)
    ce = F.nll_loss(logp, target, weight=weight, ignore_index=ignore_index, reduction="none")
    pt = torch.exp(-F.nll_loss(logp, target, ignore_index=ignore_index, reduction="none"))
    valid = target != ignore_index
    return ((1 - pt) ** gamma * ce)[valid].mean() if valid.any() else logits.sum() * 0


def segmentation_loss(name: str, logits: torch.Tensor, target: torch.Tensor,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Loss by name: ``ce``, ``dice``, ``focal``, ``ce+dice`` or ``focal+dice``.

    Raises:
        ValueError: unknown name.
    """
    parts = name.split("+")
    total = logits.new_zeros((), dtype=torch.float32)
    for p in parts:
        if p == "ce":
            total = total + F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=255)
        elif p == "dice":
            total = total + dice_loss(logits, target)
        elif p == "focal":
            total = total + focal_loss(logits, target, weight=class_weights)
        else:
            raise ValueError(f"unknown loss {p!r}; use ce, dice, focal or a '+' sum of them")
    return total


LOSSES = ("ce", "dice", "focal", "ce+dice", "focal+dice")
