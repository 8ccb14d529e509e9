"""Damage instances of one photo, and the instances of each damaged part of the case (issue 27), pure.

An instance is one 8-connected component of one damage type on the damage map (argmax), kept when it covers
at least the fusion's minimum region fraction, scored by its mean damage-class probability; a dent component
whose thick parts are separate is split there (:func:`split_at_necks`, ``FusionConfig.instance_split_*``:
two touching dents are two). It is *not* split at part boundaries, unlike the fusion's damaged parts D_k
(Ma et al. II-D-1, :mod:`.fusion`), so one scratch across a door edge stays one instance and the report can
count "three dents on the door".

Why components and not the CenterNet head of :mod:`carcheck.models.instances`: measured on CarDD valid
(``bench/studies/instance_head.py``), the components score mask AP 0.264, the head's own boxes 0.090, and the
head's centre grouping never split a component (equal to the components); CarDD test: components 0.280
(``bench/accuracy/cardd.py``). Splitting dents at their necks: 0.2639 vs 0.2635 on valid, scratches too: lower
(``bench/studies/instance_split.py``). Where the head is re-trained to beat them, this module is where it plugs in.

- :func:`photo_instances`: one photo's instances (boxes, areas, outlines in the photo's pixels, parts, cm).
- :func:`part_instances`: a per-part finding's instances and count from the photos' instances.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..schema import DamageInstance, PartFinding, PhotoReport, SizeConfig
from .fusion import Region
from .review import UNASSIGNED
from .size import region_size_cm, scale_area, scale_bbox

__all__ = ["photo_instances", "outline", "part_instances", "attach_part_instances", "MAX_OUTLINE_POINTS",
           "split_at_necks"]

#: outline points per instance at most (the report stays small; an outline is for drawing, not scoring)
MAX_OUTLINE_POINTS = 64


def outline(mask: np.ndarray, sx: float = 1.0, sy: float = 1.0, max_points: int = MAX_OUTLINE_POINTS) -> list[float]:
    """The outer outline of the largest piece of ``mask`` as ``[x1, y1, x2, y2, ...]``, scaled by ``sx``, ``sy``.

    Args:
        mask: ``(H, W)`` bool or uint8.
        sx, sy: pixels of the target image per mask pixel, along x and y.
        max_points: at most this many points (Douglas-Peucker, ``cv2.approxPolyDP``, with a growing tolerance).
    Returns:
        the flat list (empty for an empty mask); a one-pixel mask gives its pixel's four corners.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    c = max(contours, key=cv2.contourArea)
    eps = 0.5
    poly = cv2.approxPolyDP(c, eps, True)
    while len(poly) > max_points:
        eps *= 1.5
        poly = cv2.approxPolyDP(c, eps, True)
    pts = poly.reshape(-1, 2).astype(np.float64)
    if len(pts) < 3:  # a line or a single pixel: its pixel box
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0) + 1
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return [round(float(v), 1) for xy in pts for v in (xy[0] * sx, xy[1] * sy)]


def split_at_necks(comp: np.ndarray, core_fraction: float | None, min_area: int = 1) -> list[np.ndarray]:
    """Split one damage component where it narrows: two touching dents become two (the classic distance-transform
    split of touching blobs, as in the marker-based watershed of Beucher & Meyer 1993, with each pixel going to
    its nearest core instead of a flooding).

    The cores are the pixels at least ``core_fraction`` x the component's largest distance from its edge (its
    thickest part); two or more separate cores, each of at least ``min_area`` px, split the component, every pixel
    to the nearest core (Euclidean). A component of even width (a scratch) has one connected core and stays whole.

    Args:
        comp: ``(H, W)`` bool, one 8-connected component.
        core_fraction: in (0, 1]; None: never split.
        min_area: cores and pieces smaller than this are not instances of their own.
    Returns:
        the pieces (``(H, W)`` bool each, disjoint; pieces under ``min_area`` dropped); ``[comp]`` when not split.
    """
    if core_fraction is None:
        return [comp]
    from scipy import ndimage

    ys, xs = np.nonzero(comp)
    if not len(ys):
        return [comp]
    # the component's box and a 1-px ring of background (inside the frame): the same distances as on the whole map,
    # on a window of the component's size
    y0, x0 = max(0, ys.min() - 1), max(0, xs.min() - 1)
    y1, x1 = min(comp.shape[0], ys.max() + 2), min(comp.shape[1], xs.max() + 2)
    win = comp[y0:y1, x0:x1]
    dist = cv2.distanceTransform(win.astype(np.uint8), cv2.DIST_L2, 5)
    peak = float(dist.max())
    if peak < 2.0:  # too thin to have a neck
        return [comp]
    core = (dist >= core_fraction * peak).astype(np.uint8)
    n, cores, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    keep = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= min_area]
    if len(keep) < 2:
        return [comp]
    seeds = np.zeros(win.shape, np.int32)
    for j, k in enumerate(keep, 1):
        seeds[cores == k] = j
    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    owner = seeds[iy, ix]
    pieces = []
    for j in range(1, len(keep) + 1):
        piece = win & (owner == j)
        if np.count_nonzero(piece) >= min_area:
            full = np.zeros(comp.shape, bool)
            full[y0:y1, x0:x1] = piece
            pieces.append(full)
    return pieces or [comp]


def photo_instances(photo: str, damage_label: np.ndarray, damage_prob: np.ndarray, part_label: np.ndarray,
                    part_names: Sequence[str], damage_names: Sequence[str], regions: Sequence[Region],
                    min_region_fraction: float, width: int, height: int,
                    size_cfg: SizeConfig | None = None, split_core_fraction: float | None = None,
                    split_types: Sequence[str] = ()) -> list[DamageInstance]:
    """The damage instances of one photo, largest first (``id`` 1, 2, ...).

    Args:
        photo: the photo's report path.
        damage_label: ``(H, W)`` int damage argmax at network resolution (0 = no damage, ``d`` = ``damage_names[d-1]``).
        damage_prob: ``(D + 1, H, W)`` float softmax probabilities, same H, W.
        part_label: ``(H, W)`` int part map after the one-end rule (0 background).
        regions: the photo's fusion regions D_k after the plausibility step (their ``mask`` and ``part``): an
            instance lies on the parts of the regions inside it (a region of one damage type is connected, so it
            lies inside exactly one instance of that type); an instance with no region (all its pieces below
            the fusion's minimum area) takes the part under most of its pixels.
        min_region_fraction: instances smaller than this fraction of the map are dropped (the fusion's rule).
        width, height: the photo's pixels the boxes, areas and outlines are given in.
        size_cfg: the size-in-cm config (None: defaults).
        split_core_fraction, split_types: components of these types are split at their necks
            (:func:`split_at_necks`; None: not split), each piece an instance (pieces under the minimum area
            are dropped).
    Returns:
        list of :class:`~carcheck.schema.DamageInstance` (bbox / area / polygon in photo px, ``size_cm`` on
        the scale of the first part).
    """
    h, w = damage_label.shape
    sx, sy = width / w, height / h
    min_area = max(1, int(min_region_fraction * h * w))
    names = list(part_names)
    found = []
    for d in range(1, len(damage_names) + 1):
        m = (damage_label == d).astype(np.uint8)
        if not m.any():
            continue
        n, cc, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        split = split_core_fraction if damage_names[d - 1] in split_types else None
        for k in range(1, n):
            if int(stats[k, cv2.CC_STAT_AREA]) < min_area:
                continue
            for piece in split_at_necks(cc == k, split, min_area):
                ys, xs = np.nonzero(piece)
                box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
                found.append((len(ys), d, piece, box))
    found.sort(key=lambda t: -t[0])
    out = []
    for i, (area, d, comp, bbox) in enumerate(found, 1):
        name = damage_names[d - 1]
        on: dict[str, int] = {}
        for r in regions:
            if r.damage == name and r.mask is not None:
                overlap = int(np.count_nonzero(r.mask & comp))
                if overlap:
                    on[r.part] = on.get(r.part, 0) + overlap
        if not on:
            counts = np.bincount(part_label[comp].astype(np.int64), minlength=len(names) + 1)
            best = int(counts[1:].argmax()) + 1 if len(names) and counts[1:].any() else 0
            on = {names[best - 1] if best else UNASSIGNED: 1}
        parts = sorted(on, key=lambda p: (-on[p], p))
        size = region_size_cm(comp, part_label, names, parts[0], size_cfg) if parts[0] != UNASSIGNED else None
        out.append(DamageInstance(
            id=i, photo=photo, damage=name, score=round(float(damage_prob[d][comp].mean()), 4),
            bbox_xywh=scale_bbox(bbox, sx, sy), area_px=scale_area(area, sx, sy), parts=parts,
            polygon=outline(comp, sx, sy), size_cm=size))
    return out


def part_instances(finding: PartFinding, photos: Sequence[PhotoReport]) -> tuple[list[DamageInstance], int]:
    """The instances of one per-part finding: in the photos showing its damage, those of its damage types that
    lie on the part; and their count, the most in any one photo (one dent is seen in several photos, so views
    are not summed).

    Returns:
        (instances in photo order, then by id; count).
    """
    names = set(finding.photos)
    types = set(finding.damages)
    listed, count = [], 0
    for p in photos:
        if p.path not in names:
            continue
        mine = [i for i in p.instances if i.damage in types and finding.part in i.parts]
        listed.extend(mine)
        count = max(count, len(mine))
    return listed, count


def attach_part_instances(parts: Sequence[PartFinding], photos: Sequence[PhotoReport]) -> None:
    """:func:`part_instances` of every per-part finding, set on it in place (``instances``, ``instance_count``)."""
    for pf in parts:
        pf.instances, pf.instance_count = part_instances(pf, photos)
