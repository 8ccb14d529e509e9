"""Blur faces and licence plates in every image the report writes.

Detection uses the Haar cascades shipped with opencv-python-headless (frontal faces,
profile faces, plates). The SOCAR paper removed photos with people; CarDD blurred faces and
plates. What this misses (stated in every report): faces turned away or smaller than
~24 px, strongly tilted or non-European-format plates (the plate cascade was trained on
Russian plates), plates smaller than ~40x13 px, and people's bodies, reflections and
printed names. It is a safeguard for shared reports, not an anonymisation guarantee.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

__all__ = ["detect_private_regions", "blur_private_regions"]

_CASCADES = {
    "face": ("haarcascade_frontalface_default.xml", 1.1, 5, (24, 24)),
    "profile": ("haarcascade_profileface.xml", 1.1, 5, (24, 24)),
    "plate": ("haarcascade_russian_plate_number.xml", 1.1, 4, (40, 13)),
}


@lru_cache(maxsize=None)
def _cascade(name: str) -> cv2.CascadeClassifier:
    fn = _CASCADES[name][0]
    c = cv2.CascadeClassifier(cv2.data.haarcascades + fn)
    if c.empty():
        raise RuntimeError(f"OpenCV Haar cascade {fn} failed to load from {cv2.data.haarcascades}")
    return c


def detect_private_regions(image: np.ndarray, max_side: int = 1024) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Faces and plates in an RGB ``uint8`` ``(H, W, 3)`` image.

    Returns:
        ``[(kind, (x, y, w, h))]`` in pixels of ``image``; kind in ``face``, ``profile``, ``plate``.
    """
    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if s < 1:
        gray = cv2.resize(gray, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    out = []
    for kind, (_, scale, neighbours, min_size) in _CASCADES.items():
        for (x, y, bw, bh) in _cascade(kind).detectMultiScale(gray, scaleFactor=scale, minNeighbors=neighbours,
                                                              minSize=min_size):
            out.append((kind, tuple(int(round(v / s)) for v in (x, y, bw, bh))))
    return out


def blur_private_regions(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Copy of ``image`` with every detected face and plate strongly blurred (box grown by 15%).

    Returns:
        (blurred RGB ``uint8`` image, number of regions blurred)
    """
    out = image.copy()
    regions = detect_private_regions(image)
    h, w = image.shape[:2]
    for _, (x, y, bw, bh) in regions:
        gx, gy = int(bw * 0.15), int(bh * 0.15)
        x0, y0, x1, y1 = max(0, x - gx), max(0, y - gy), min(w, x + bw + gx), min(h, y + bh + gy)
        roi = out[y0:y1, x0:x1]
        if roi.size == 0:
            continue
        k = max(3, (max(x1 - x0, y1 - y0) // 3) | 1)
        out[y0:y1, x0:x1] = cv2.GaussianBlur(roi, (k, k), 0)
    return out, len(regions)
