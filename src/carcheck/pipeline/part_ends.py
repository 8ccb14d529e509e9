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

__all__ = ["FRONT_REAR_PAIRS", "end_shares", "consistent_ends"]

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
