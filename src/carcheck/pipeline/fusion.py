"""Damaged parts of one photo (Ma et al., IEEE T-ITS 2023, sections II-D-1 and II-D-2).

Part and damage predictions are overlaid pixel by pixel (argmax of each); a damaged part D_k
is an 8-connected component of pixels sharing one (part, damage type) pair. Damage on
background pixels is kept as part ``"unassigned"``. Each D_k gets its area (px² of the
original photo), its fraction of the part's visible area, a size class, and
C_base = mean damage-class probability over the component (II-D-3).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FusionConfig", "Region", "damaged_parts", "visible_parts", "size_class"]

UNASSIGNED = "unassigned"


@dataclass(frozen=True)
class FusionConfig:
    """Thresholds of the fusion step (all fractions of the photo unless stated).

    Attributes:
        min_region_fraction: D_k smaller than this fraction of the image are dropped (noise).
        visible_part_fraction: a part counts as visible when it covers at least this fraction.
        closeup_max_parts: a photo with at most this many visible parts is a close-up
            (II-D-2's distance surrogate); more is a full view.
        size_thresholds: (small/medium, medium/large) cut-offs of the fraction of the part
            covered by the damage; for a close-up the fraction is divided by
            ``closeup_scale`` first, because a close-up magnifies damage relative to the part.
        closeup_scale: see above.
    """

    min_region_fraction: float = 0.0005
    visible_part_fraction: float = 0.005
    closeup_max_parts: int = 2
    size_thresholds: tuple[float, float] = (0.05, 0.25)
    closeup_scale: float = 1.0


@dataclass
class Region:
    """One D_k on the network-resolution label maps."""

    part: str
    damage: str
    area: int  # pixels at network resolution
    part_area: int  # visible pixels of the part at network resolution (image pixels for unassigned)
    c_base: float
    bbox: tuple[int, int, int, int]  # x, y, w, h at network resolution


def size_class(fraction: float, cfg: FusionConfig, closeup: bool) -> str:
    """``small`` / ``medium`` / ``large`` from the covered fraction of the part (stated thresholds)."""
    f = fraction / cfg.closeup_scale if closeup else fraction
    lo, hi = cfg.size_thresholds
    return "small" if f < lo else "medium" if f < hi else "large"


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
    Returns:
        regions sorted by decreasing C_base.
    """
    # int64: label arithmetic below (damage * n_parts + part, -1 for none) must not wrap around in uint8
    part_label = (part_prob.argmax(0) if part_label is None else part_label).astype(np.int64)
    dmg_label = (damage_prob.argmax(0) if damage_label is None else damage_label).astype(np.int64)
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
            ))
    return sorted(regions, key=lambda r: -r.c_base)
