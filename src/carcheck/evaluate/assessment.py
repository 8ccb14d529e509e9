"""Ground truth for the case assessment: which parts a damage polygon touches.

Used by ``bench/accuracy/assess.py`` and the assessment tests to score ``carcheck assess`` on the lplenka
photos, where parts and damage are annotated on the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.coco_dataset import CocoSegmentationDataset

__all__ = ["damaged_parts_ground_truth"]


def damaged_parts_ground_truth(annotations: str | Path, part_taxonomy: str = "lplenka_parts",
                               damage_category: str = "damage") -> dict[str, set[str]]:
    """Per image: the parts (of ``part_taxonomy``) whose ground-truth mask a ``damage_category``
    polygon overlaps by at least one pixel.

    Returns:
        resolved image path (str) -> set of part names.
    Raises:
        ImageLoadError: for an unreadable image (names the file).
    """
    ds = CocoSegmentationDataset([annotations], part_taxonomy)
    out: dict[str, set[str]] = {}
    for i in range(len(ds)):
        _, part_mask, insts = ds.load(i)
        h, w = part_mask.shape
        names: set[str] = set()
        for inst in insts:
            if inst.category == damage_category:
                names |= {ds.taxonomy.classes[v - 1] for v in np.unique(part_mask[inst.to_mask(h, w)]) if v > 0}
        out[str(ds.image_paths()[i])] = names
    return out
