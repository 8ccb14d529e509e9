"""Damage x part plausibility in the fusion: a damage type segmented on a part it cannot occur on
(a flat tyre on a door, a broken lamp on the hood; the declared table is
:data:`~carcheck.data.plausibility.PLAUSIBILITY`) is moved to the plausible part touching the region,
or flagged for review when no plausible part touches it.

"Touching": the region's mask dilated by ``dilation_px`` (network-resolution px, a square
structuring element) overlaps the part's pixels; among the plausible parts touching it the one
with the largest overlap is chosen (ties: the part first in taxonomy order). The moved region
keeps its pixels, area, box and C_base; its part's visible area grows by the region (its pixels
were labelled as the other part). Pure: label maps and regions in, regions out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, Sequence

import cv2
import numpy as np

from ..data.plausibility import PlausibilityTable
from .fusion import Region
from .review import UNASSIGNED, implausible_reason

__all__ = ["neighbouring_parts", "resolve_region", "apply_plausibility"]


def neighbouring_parts(mask: np.ndarray, part_label: np.ndarray, part_names: Sequence[str],
                       dilation_px: int) -> dict[str, int]:
    """Parts touching a region: part name -> pixels of the part inside the dilated region mask.

    Args:
        mask: ``(H, W)`` bool, the region.
        part_label: ``(H, W)`` int part labels, 0 background, ``i`` = ``part_names[i - 1]``.
        dilation_px: dilation radius in px (0: only the region's own pixels).
    """
    m = mask.astype(np.uint8)
    if dilation_px > 0:
        m = cv2.dilate(m, np.ones((2 * dilation_px + 1, 2 * dilation_px + 1), np.uint8))
    counts = np.bincount(part_label[m.astype(bool)].ravel().astype(np.int64), minlength=len(part_names) + 1)
    return {part_names[i - 1]: int(counts[i]) for i in range(1, len(part_names) + 1) if counts[i] > 0}


def resolve_region(region: Region, part_label: np.ndarray, part_names: Sequence[str], table: PlausibilityTable,
                   mode: Literal["reassign", "flag", "off"] = "reassign", dilation_px: int = 3,
                   part_counts: np.ndarray | None = None) -> Region:
    """One region through the plausibility rule (module docstring).

    Args:
        region: from :func:`~.fusion.damaged_parts` (its ``mask`` is needed for ``reassign``).
        part_label, part_names: the photo's part map and names.
        table: the damage taxonomy's table over the part taxonomy.
        mode: ``reassign`` (move, else flag), ``flag`` (only flag) or ``off``.
        dilation_px: see :func:`neighbouring_parts`.
        part_counts: ``np.bincount(part_label.ravel())`` when the caller has it.
    Returns:
        the region unchanged (plausible, unassigned, a part or damage class the table does not
        know, or ``off``), a copy on the chosen part with ``reassigned_from``, or a copy with the
        review reason of :func:`~.review.implausible_reason`.
    """
    if (mode == "off" or region.part == UNASSIGNED or region.damage not in table.table
            or region.part not in table.parts.classes or table.plausible(region.damage, region.part)):
        return region
    if mode == "reassign" and region.mask is not None:
        near = neighbouring_parts(region.mask, part_label, part_names, dilation_px)
        ok = [(n, p) for p, n in near.items() if p != region.part and p in table.parts.classes
              and table.plausible(region.damage, p)]
        if ok:
            best = max(ok, key=lambda t: (t[0], -list(part_names).index(t[1])))[1]
            if part_counts is None:
                part_counts = np.bincount(part_label.ravel().astype(np.int64), minlength=len(part_names) + 1)
            return replace(region, part=best, part_area=int(part_counts[list(part_names).index(best) + 1]) + region.area,
                           reassigned_from=region.part)
    return replace(region, review_reasons=[*region.review_reasons, implausible_reason(region.part, region.damage)])


def apply_plausibility(regions: Sequence[Region], part_label: np.ndarray, part_names: Sequence[str],
                       table: PlausibilityTable | None, mode: Literal["reassign", "flag", "off"] = "reassign",
                       dilation_px: int = 3) -> list[Region]:
    """:func:`resolve_region` on every region of a photo (all unchanged when ``table`` is None: no
    declared table for the model's taxonomies); order kept."""
    if table is None or mode == "off":
        return list(regions)
    counts = np.bincount(part_label.ravel().astype(np.int64), minlength=len(part_names) + 1)
    return [resolve_region(r, part_label, part_names, table, mode, dilation_px, counts) for r in regions]
