"""Verification pairs for evaluation: a coarse colour name per vehicle photo and harder negative
pairs (same vehicle type AND same colour), since the datasets' own negatives are often told apart
by colour alone."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

import cv2
import numpy as np

__all__ = ["dominant_colour", "hard_pairs"]


def dominant_colour(image: np.ndarray) -> str:
    """Coarse colour of the vehicle in a crop: median HSV of the central 50% of the photo.

    Args:
        image: RGB ``uint8`` ``(H, W, 3)``.
    Returns:
        one of ``black, white, gray, red, orange, yellow, green, blue, purple``.
    """
    h, w = image.shape[:2]
    c = image[h // 4: max(h // 4 + 1, 3 * h // 4), w // 4: max(w // 4 + 1, 3 * w // 4)]
    hsv = cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(float)
    v = np.median(hsv[:, 2]) / 255
    s = np.median(hsv[:, 1]) / 255
    if v < 0.22:
        return "black"
    if s < 0.18:
        return "white" if v > 0.7 else "gray"
    hue = np.median(hsv[hsv[:, 1] > 0.18 * 255, 0]) * 2  # degrees
    for name, upper in (("red", 15), ("orange", 40), ("yellow", 70), ("green", 165), ("blue", 260), ("purple", 330)):
        if hue < upper:
            return name
    return "red"


def hard_pairs(files_a: Sequence[str], files_b: Sequence[str], identities: Sequence[str], types: Sequence[str],
               colours: Sequence[str], seed: int = 0) -> list[tuple[str, str, int]]:
    """One positive (a_i, b_i) per identity and one negative (a_i, b_j) with j another identity of
    the same type AND colour (identities without such a partner get no negative).

    Args:
        files_a / files_b: per identity, a photo from the first and the second camera.
        colours: per identity, :func:`dominant_colour` of its first photo.
    Returns:
        ``[(file_a, file_b, same)]``.
    """
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (t, c) in enumerate(zip(types, colours)):
        groups[(t, c)].append(i)
    pairs = []
    for i in range(len(identities)):
        pairs.append((files_a[i], files_b[i], 1))
        others = [j for j in groups[(types[i], colours[i])] if identities[j] != identities[i]]
        if others:
            pairs.append((files_a[i], files_b[rng.choice(others)], 0))
    return pairs
