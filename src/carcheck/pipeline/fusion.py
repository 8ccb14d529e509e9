"""Damaged parts of one photo (Ma et al., IEEE T-ITS 2023, sections II-D-1 and II-D-2).

Part and damage predictions are overlaid pixel by pixel (argmax of each); a damaged part D_k
is an 8-connected component of pixels sharing one (part, damage type) pair. Damage on
background pixels is kept as part ``"unassigned"``. Each D_k gets its area (px² of the
original photo), its fraction of the part's visible area, a size class, and
C_base = mean damage-class probability over the component (II-D-3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..schema import FusionConfig
from .review import UNASSIGNED
from .size import size_class

__all__ = ["Region", "damaged_parts", "visible_parts", "size_class", "UNASSIGNED", "low_threshold_label"]


@dataclass
class Region:
    """One D_k on the network-resolution label maps.

    Attributes:
        part, damage: the (part, damage type) pair (part ``unassigned`` on background).
        area: pixels at network resolution.
        part_area: visible pixels of the part at network resolution (image pixels for unassigned).
        c_base: mean damage-class probability over the region, in [0, 1].
        bbox: x, y, w, h at network resolution.
        mask: ``(H, W)`` bool, the region's pixels (for :mod:`.plausibility`).
        reassigned_from: the part it was segmented on, when :mod:`.plausibility` moved it.
        review_reasons: why the region needs a person (an implausible pair that could not be moved).
    """

    part: str
    damage: str
    area: int
    part_area: int
    c_base: float
    bbox: tuple[int, int, int, int]
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    reassigned_from: str | None = None
    review_reasons: list[str] = field(default_factory=list)


def visible_parts(part_label: np.ndarray, part_names: list[str], cfg: FusionConfig) -> list[str]:
    """Parts covering at least ``cfg.visible_part_fraction`` of the image.

    Args:
        part_label: ``(H, W)`` int, 0 = background, ``i`` = ``part_names[i - 1]``.
    """
    counts = np.bincount(part_label.ravel(), minlength=len(part_names) + 1)
    total = part_label.size
    return [part_names[i - 1] for i in range(1, len(part_names) + 1) if counts[i] >= cfg.visible_part_fraction * total]


def damaged_parts(part_prob: np.ndarray, damage_prob: np.ndarray, part_names: list[str], damage_names: list[str],
                  cfg: FusionConfig, part_label: np.ndarray | None = None,
                  damage_label: np.ndarray | None = None) -> list[Region]:
    """Overlay part and damage predictions into damaged parts D_k.

    Args:
        part_prob: ``(P + 1, H, W)`` float part probabilities (index 0 background).
        damage_prob: ``(D + 1, H, W)`` float damage probabilities (index 0 no damage), same H, W.
        part_names, damage_names: class names without background.
        part_label, damage_label: their argmax ``(H, W)`` when the caller already has it.
    With ``cfg.unassigned_min_part_probability`` set, damaged pixels labelled background take the most
    probable part there when its probability reaches that value (wrecks: a crushed panel is often no
    part to the part model); the others stay ``unassigned``.

    Returns:
        regions sorted by decreasing C_base.
    """
    # int64: label arithmetic below (damage * n_parts + part, -1 for none) must not wrap around in uint8
    part_label = (part_prob.argmax(0) if part_label is None else part_label).astype(np.int64)
    dmg_label = (damage_prob.argmax(0) if damage_label is None else damage_label).astype(np.int64)
    if cfg.unassigned_min_part_probability is not None and part_prob.shape[0] > 1:
        orphan = (part_label == 0) & (dmg_label > 0)
        if orphan.any():
            best = part_prob[1:].argmax(0) + 1
            ok = orphan & (np.take_along_axis(part_prob, best[None], 0)[0] >= cfg.unassigned_min_part_probability)
            part_label = np.where(ok, best, part_label)
    h, w = dmg_label.shape
    min_area = max(1, int(cfg.min_region_fraction * h * w))
    part_counts = np.bincount(part_label.ravel(), minlength=len(part_names) + 1)
    regions: list[Region] = []
    n_parts = len(part_names) + 1
    combo = np.where(dmg_label > 0, dmg_label * n_parts + part_label, -1)
    for key in np.unique(combo):
        if key < 0:
            continue
        d, p = divmod(int(key), n_parts)
        m = (combo == key).astype(np.uint8)
        n, cc, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        for k in range(1, n):
            area = int(stats[k, cv2.CC_STAT_AREA])
            if area < min_area:
                continue
            comp = cc == k
            regions.append(Region(
                part=part_names[p - 1] if p > 0 else UNASSIGNED,
                damage=damage_names[d - 1],
                area=area,
                part_area=int(part_counts[p]) if p > 0 else h * w,
                c_base=float(damage_prob[d][comp].mean()),
                bbox=tuple(int(v) for v in stats[k, :4]),
                mask=comp,
            ))
    return sorted(regions, key=lambda r: -r.c_base)


def low_threshold_label(damage_prob: np.ndarray, min_probability: float) -> np.ndarray:
    """The damage map read at a lower threshold: the most probable damage class wherever P(any damage) =
    1 - P(no damage) reaches ``min_probability``, else 0 (a hysteresis-like second look, used only where the
    image-level damage filter says the photo shows damage the argmax missed).

    Args:
        damage_prob: ``(D + 1, H, W)`` float softmax probabilities (index 0 no damage).
        min_probability: in (0, 1).
    Returns:
        ``(H, W)`` int64 label map (0 = no damage, ``d`` = damage class ``d``).
    """
    fg = 1.0 - damage_prob[0]
    best = damage_prob[1:].argmax(0) + 1
    return np.where(fg >= min_probability, best, 0).astype(np.int64)
