"""The one privacy blur: every image carcheck writes goes through :func:`blur_private_regions`.

Writers: the HTML report (photos, overlays, Grad-CAM, crops; the PDF prints that HTML), the compare page, the
service's blurred derivatives (:mod:`carcheck.serve.storage`; review crops, review pages and the COCO export are
cut from those derivatives unless ``--originals``). Regions come from the face and plate detector of
:mod:`carcheck.models.privacy` (a mask head on the shared backbone's features). An assessment computes them
once per photo from its own backbone pass and keeps them with the photo
(``PhotoVisual.private_regions``); a writer given no regions runs the detector itself, once per photo.

What the detector misses and its measured recall are stated in every report (:data:`carcheck.schema.report
.PRIVACY_NOTE`) and measured by ``bench/accuracy/privacy.py``. It is a safeguard for shared reports, not an
anonymisation guarantee.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..models.privacy import PrivateRegion, detector

__all__ = ["detect_private_regions", "blur_private_regions", "PrivateRegion"]


def detect_private_regions(image: np.ndarray) -> list[PrivateRegion]:
    """Faces and licence plates in an RGB ``uint8`` ``(H, W, 3)`` image.

    Returns:
        :class:`~carcheck.models.privacy.PrivateRegion` list (kind ``face`` / ``plate``, grown ``bbox_xywh`` in
        pixels of ``image``, score 0..1), from the shipped detector (loaded once per process).
    Raises:
        ValueError: not an ``(H, W, 3)`` array.
    """
    return detector().detect(image)


def blur_private_regions(image: np.ndarray, regions: Sequence[PrivateRegion] | None = None,
                         scale: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, int]:
    """Copy of ``image`` with every face and plate region strongly blurred: the one blur of every written image.

    Args:
        image: RGB ``uint8`` ``(H, W, 3)``.
        regions: the photo's regions when already known (cached with the photo), else None: detected here.
        scale: ``(sx, sy)`` px of ``image`` per px of the regions' coordinates (regions found on another size
            of the same photo).
    Returns:
        (blurred RGB ``uint8`` image of the same shape, number of regions blurred)
    Raises:
        ValueError: not an ``(H, W, 3)`` array (from the detector).
    """
    if regions is None:
        regions = detect_private_regions(image)
    out = image.copy()
    h, w = image.shape[:2]
    n = 0
    for r in regions:
        x, y, bw, bh = r.bbox_xywh
        x0, y0 = max(0, int(x * scale[0])), max(0, int(y * scale[1]))
        x1, y1 = min(w, int(np.ceil((x + bw) * scale[0]))), min(h, int(np.ceil((y + bh) * scale[1])))
        if x1 <= x0 or y1 <= y0:
            continue
        roi = out[y0:y1, x0:x1]
        # a Gaussian wide enough that no character or facial feature survives, then a coarse pixelation
        k = max(3, (max(x1 - x0, y1 - y0) // 2) | 1)
        roi = cv2.GaussianBlur(roi, (k, k), 0)
        small = cv2.resize(roi, (max(1, (x1 - x0) // 8), max(1, (y1 - y0) // 8)), interpolation=cv2.INTER_AREA)
        out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        n += 1
    return out, n
