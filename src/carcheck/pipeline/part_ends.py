"""One end of the car per photo: front and rear part labels made consistent with the view.

A photo shows a car from the front, the rear, or the side. Ground truth says how rarely both ends are
prominent in one photo: on DSMLR car_parts/testset, 4 of 85 photos have more than 3% of the vehicle's
pixels on front parts AND on rear parts, while the shipped part model's maps do so on 27 of 85 (a
trunk read as a hood, a rear bumper as a front one: the "patchwork" part map of issue 15 item 6).
This rule relabels the minority end when one end dominates: if the rear parts cover more than
``k`` times the pixels of the front parts, every front-part pixel becomes its rear counterpart (hood ->
trunk, front bumper -> back bumper, windscreen -> back glass, each front light -> the back light of the
same side), and the other way round (tailgate and trunk -> hood). Side views, where neither end dominates,
are left as they are. ``k`` is chosen on the part model's training photos (``bench/calibration/part_ends.py``).

Pure: label maps in, label map out; the assessment applies it to the part map before the fusion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["FRONT_REAR_PAIRS", "FRONT_DOORS", "BACK_DOORS", "end_shares", "consistent_ends", "door_anchored_ends"]

#: (front part, rear part) of the DSMLR taxonomy that a view's dominant end relabels into each other.
FRONT_REAR_PAIRS = (("front_bumper", "back_bumper"), ("front_glass", "back_glass"), ("hood", "trunk"),
                    ("front_left_light", "back_left_light"), ("front_right_light", "back_right_light"))


def _ids(names: Sequence[str]) -> tuple[list[tuple[int, int]], list[int], list[int], int | None, int | None]:
    idx = {n: i for i, n in enumerate(names)}
    pairs = [(idx[f], idx[r]) for f, r in FRONT_REAR_PAIRS if f in idx and r in idx]
    front = [f for f, _ in pairs]
    rear = [r for _, r in pairs] + ([idx["tailgate"]] if "tailgate" in idx else [])
    return pairs, front, rear, idx.get("tailgate"), idx.get("hood")


def end_shares(part_label: np.ndarray, names: Sequence[str]) -> tuple[float, float]:
    """(front share, rear share): fractions of the vehicle's pixels (label > 0) on front / rear parts.

    Args:
        part_label: ``(H, W)`` integer label map, 0 = background, class ``i`` named ``names[i]``.
        names: class names including the background at index 0 (DSMLR parts).
    """
    _, front, rear, _, _ = _ids(names)
    vehicle = max(1, int((part_label > 0).sum()))
    return float(np.isin(part_label, front).sum()) / vehicle, float(np.isin(part_label, rear).sum()) / vehicle


def consistent_ends(part_label: np.ndarray, names: Sequence[str], k: float) -> np.ndarray:
    """The part map with the minority end relabelled when one end covers more than ``k`` times the other.

    Args:
        part_label: ``(H, W)`` integer label map (0 = background); not modified.
        names: class names including the background at index 0; taxonomies without the front/rear
            pairs come back unchanged.
        k: dominance ratio (> 1); ``inf`` turns the rule off.
    Returns:
        ``(H, W)`` label map of the same dtype.
    Raises:
        ValueError: ``k`` <= 1.
    """
    if not k > 1:
        raise ValueError(f"dominance ratio k must be > 1, got {k}")
    pairs, _, _, tailgate, hood = _ids(names)
    if not pairs:
        return part_label
    fs, rs = end_shares(part_label, names)
    out = part_label.copy()
    if rs > k * fs:
        for f, r in pairs:
            out[part_label == f] = r
    elif fs > k * rs:
        for f, r in pairs:
            out[part_label == r] = f
        if tailgate is not None and hood is not None:
            out[part_label == tailgate] = hood
    return out


#: DSMLR door classes by the end of the car they sit next to.
FRONT_DOORS = ("front_left_door", "front_right_door")
BACK_DOORS = ("back_left_door", "back_right_door")


def door_anchored_ends(part_label: np.ndarray, names: Sequence[str], min_door_share: float = 0.02,
                       max_distance: float = 0.35) -> np.ndarray:
    """The part map with each end-of-car region relabelled to the end its nearest door says.

    A car's front parts (hood, front bumper, windscreen, headlamps) sit next to its front doors and its rear
    parts next to its back doors. On a wreck the crushed end is what the part model reads worst (a torn
    tailgate becomes "hood", a hanging rear bumper "front bumper"), while the doors beside it keep their
    shape and are read well. So each 8-connected region of front-end labels whose pixels mostly have a
    back door as their nearest door becomes the rear counterparts (:data:`FRONT_REAR_PAIRS`), and each
    rear-end region whose pixels mostly have a front door as nearest becomes the front counterparts
    (tailgate -> hood). Back doors must cover ``min_door_share`` of the vehicle's pixels for the rule to
    act at all (a two-door car has no back doors: its single door is labelled a front door, so a rear
    view of a coupe never turns into a front); a rear region turns front only where back doors are
    visible too. Pixels farther than ``max_distance`` x the map's longest side from any door do not vote.

    Args:
        part_label: ``(H, W)`` integer label map, 0 = background, class ``i`` named ``names[i]``; not modified.
        names: class names including the background at index 0 (DSMLR parts); other taxonomies come back
            unchanged.
        min_door_share: fraction of the vehicle's pixels (label > 0) the back doors (and, for a rear region
            to turn front, the front doors) must each cover, in [0, 1].
        max_distance: voting radius as a fraction of the map's longest side, in pixels.
    Returns:
        ``(H, W)`` label map of the same dtype.
    """
    from scipy import ndimage

    idx = {n: i for i, n in enumerate(names)}
    pairs, front, rear, tailgate, hood = _ids(names)
    fdoors = [idx[n] for n in FRONT_DOORS if n in idx]
    bdoors = [idx[n] for n in BACK_DOORS if n in idx]
    if not pairs or not fdoors or not bdoors:
        return part_label
    vehicle = max(1, int((part_label > 0).sum()))
    is_back = np.isin(part_label, bdoors)
    is_front = np.isin(part_label, fdoors)
    if is_back.sum() < min_door_share * vehicle:
        return part_label
    front_doors_seen = is_front.sum() >= min_door_share * vehicle
    step = 2 if min(part_label.shape) >= 64 else 1  # the vote on a half-resolution grid (same answer, 4x cheaper)
    doors = (is_back | is_front)[::step, ::step]
    dist, (iy, ix) = ndimage.distance_transform_edt(~doors, return_indices=True)
    near = dist * step <= max_distance * max(part_label.shape)
    nearest_back = is_back[::step, ::step][iy, ix]
    lut = np.arange(max(len(names), int(part_label.max()) + 1))
    out = part_label.copy()
    eight = np.ones((3, 3), bool)
    for end, to_other, allowed in ((front, {f: r for f, r in pairs}, True),
                                   (rear, {r: f for f, r in pairs} | ({tailgate: hood} if tailgate is not None
                                                                      and hood is not None else {}),
                                    front_doors_seen)):
        if not allowed:
            continue
        comps, n = ndimage.label(np.isin(part_label, end), structure=eight)
        if not n:
            continue
        voters = comps[::step, ::step] * near
        votes_back = np.bincount(voters[nearest_back].ravel(), minlength=n + 1)
        votes_all = np.bincount(voters.ravel(), minlength=n + 1)
        share_back = votes_back / np.maximum(1, votes_all)
        wrong = (share_back > 0.5) if end is front else ((share_back < 0.5) & (votes_all > 0))
        wrong[0] = False
        flip = wrong[comps]
        if flip.any():
            other = lut.copy()
            for src, dst in to_other.items():
                other[src] = dst
            out[flip] = other[part_label[flip]].astype(out.dtype)
    return out
