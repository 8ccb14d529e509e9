"""COCO instances as training data: category names mapped onto a target taxonomy, semantic masks,
and the torch dataset (image + semantic mask + instances) the segmentation trainer and evaluator read.

Category names are mapped to a target taxonomy through the declared tables of
:mod:`carcheck.data.taxonomy`.

Overlap rule for semantic masks: instances are painted from lowest to highest priority,
so the highest priority wins a pixel. For damage taxonomies the priority is CarDD's
(crack > dent > scratch, :data:`~carcheck.data.taxonomy.DAMAGE_PRIORITY`); ties, and all
part taxonomies, are broken by area: a smaller instance is painted over a larger one
(a mirror over the door it overlaps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .coco import CocoImage, CocoInstance, CocoSource
from .images import ImageLoadError, load_image
from .taxonomy import DAMAGE_PRIORITY, IGNORE, MAPPINGS, TAXONOMIES, Taxonomy, TaxonomyError, get_taxonomy

__all__ = ["CocoSegmentationDataset", "category_map_for", "semantic_mask"]


def category_map_for(names: Sequence[str], target: Taxonomy) -> dict[str, str | None]:
    """Map COCO category names onto ``target`` using the declared taxonomy tables.

    A name that is a class of ``target`` maps to itself; otherwise the first declared
    mapping from a taxonomy containing the name to ``target`` is used; names covered by
    neither are dropped (``None``), e.g. the part categories of lplenka's merged file
    when the target is a damage taxonomy.
    """
    out: dict[str, str | None] = {}
    for name in names:
        if name in target.classes:
            out[name] = name
            continue
        out[name] = None
        for (src, dst), m in MAPPINGS.items():
            if dst == target.name and name in TAXONOMIES[src].classes:
                out[name] = m.map_name(name)
                break
    return out


def _is_damage(target: Taxonomy) -> bool:
    return any(c in DAMAGE_PRIORITY for c in target.classes)


def semantic_mask(instances: Sequence[CocoInstance], height: int, width: int, target: Taxonomy,
                  category_map: Mapping[str, str | None]) -> np.ndarray:
    """Rasterise instances into one semantic mask with the module's overlap rule.

    Instances whose category maps to :data:`~carcheck.data.taxonomy.IGNORE` are painted 255 (the
    ignore label) first, so any labelled class overlapping them wins.

    Returns:
        ``np.ndarray`` ``(height, width)``, ``uint8``; 0 = background, ``i + 1`` =
        ``target.classes[i]``, 255 = ignored.
    """
    damage = _is_damage(target)
    painted = []
    ignored = np.zeros((height, width), dtype=bool)
    for inst in instances:
        cls = category_map.get(inst.category)
        if cls is None:
            continue
        m = inst.to_mask(height, width)
        if cls == IGNORE:
            ignored |= m
            continue
        rank = DAMAGE_PRIORITY.index(cls) if damage and cls in DAMAGE_PRIORITY else len(DAMAGE_PRIORITY)
        painted.append((rank, int(m.sum()), target.index(cls) + 1, m))
    # paint low priority first: higher rank number = lower priority; larger area first
    painted.sort(key=lambda t: (-t[0], -t[1]))
    out = np.zeros((height, width), dtype=np.uint8)
    out[ignored] = 255
    for _, _, label, m in painted:
        out[m] = label
    return out


@dataclass
class CocoSegmentationDataset(Dataset):
    """Torch dataset over one or more COCO files: image + semantic mask (+ instances).

    Args:
        sources: COCO JSON paths (or :class:`CocoSource` objects).
        target: target taxonomy name, e.g. ``"dsmlr_parts"`` or ``"damage_type"``.
        transform: optional callable ``(image, mask) -> (image, mask)`` applied to the
            uint8 CHW image tensor and int64 HW mask tensor (torchvision transforms v2
            with ``tv_tensors.Mask`` fit here).
        with_instances: also return per-instance binary masks and target labels.

    Items are dicts: ``image`` (``uint8`` tensor ``(3, H, W)``), ``mask`` (``int64``
    ``(H, W)``), ``path`` (str), ``image_id`` (int) and, with instances, ``instance_masks``
    (``bool`` ``(N, H, W)``) and ``instance_labels`` (``int64`` ``(N,)``, 1-based).

    Raises:
        ImageLoadError: from ``__getitem__``, naming the file, for unreadable images.
    """

    sources: Sequence[str | Path | CocoSource]
    target: str
    transform: Callable | None = None
    with_instances: bool = False
    _items: list[tuple[CocoSource, CocoImage]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.taxonomy = get_taxonomy(self.target)
        self.coco_sources = [s if isinstance(s, CocoSource) else CocoSource(s) for s in self.sources]
        self._items = [(src, im) for src in self.coco_sources for im in src.images]
        names = sorted({n for s in self.coco_sources for n in s.category_names()})
        self.category_map = category_map_for(names, self.taxonomy)
        if not any(v is not None and v != IGNORE for v in self.category_map.values()):
            raise TaxonomyError(f"no category of {names} maps to taxonomy {self.target!r}")

    def __len__(self) -> int:
        return len(self._items)

    def image_paths(self) -> list[Path]:
        """Resolved image paths, in item order."""
        return [im.path for _, im in self._items]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, list[CocoInstance]]:
        """Untransformed ``(image HxWx3 uint8, mask HxW uint8, instances)`` of item ``index``.

        The mask is rasterised at the file's real size; a declared size that differs is
        an error (``carcheck dataset check`` finds these up front).

        Raises:
            ImageLoadError: unreadable image or annotation/file size mismatch.
        """
        src, im = self._items[index]
        image = load_image(im.path)
        h, w = image.shape[:2]
        if (im.width, im.height) != (w, h) and im.width and im.height:
            raise ImageLoadError(im.path, f"annotation says {im.width}x{im.height}, file is {w}x{h}")
        insts = src.instances(im.id)
        return image, semantic_mask(insts, h, w, self.taxonomy, self.category_map), insts

    def __getitem__(self, index: int) -> dict:
        src, im = self._items[index]
        image, mask, insts = self.load(index)
        img_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        mask_t = torch.from_numpy(mask.astype(np.int64))
        if self.transform is not None:
            img_t, mask_t = self.transform(img_t, mask_t)
        item = {"image": img_t, "mask": mask_t, "path": str(im.path), "image_id": im.id}
        if self.with_instances:
            h, w = image.shape[:2]
            kept = [(i, self.category_map.get(i.category)) for i in insts]
            kept = [(i, c) for i, c in kept if c is not None and c != IGNORE]
            masks = np.stack([i.to_mask(h, w) for i, _ in kept]) if kept else np.zeros((0, h, w), bool)
            item["instance_masks"] = torch.from_numpy(masks)
            item["instance_labels"] = torch.tensor([self.taxonomy.index(c) + 1 for _, c in kept], dtype=torch.int64)
        return item
