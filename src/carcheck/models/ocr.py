"""Reading text in a photo: a thin wrapper over RapidOCR (``rapidocr-onnxruntime``, issue 30 item 2).

The package ships its weights inside the wheel (PP-OCRv4 detection + recognition and the PP-OCR mobile
angle classifier as ONNX, about 16 MB in ``rapidocr_onnxruntime/models/``), so nothing is downloaded
at run time: :func:`read_text` runs with no network. The engine is built once per process, on the
first call (lazy: an assessment without a VIN / odometer / document photo never loads it), with ONNX
Runtime limited to :data:`THREADS` intra-op threads.

Compared with EasyOCR + its bundled offline English weights (``bench/accuracy/ocr.py``); the
numbers and the choice are in ``bench/results/ocr.json`` and ``docs/identity.md``.

Used by :mod:`carcheck.pipeline.vehicle_text` on photos the photo-type head calls ``vin_dashboard`` or
``document``; the text rules (VIN, odometer) are in :mod:`carcheck.pipeline.vin` and
:mod:`carcheck.pipeline.odometer`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["TextLine", "read_text", "read_plate", "engine", "plate_engine", "THREADS", "ENGINE_NAME",
           "PLATE_DET_SIDE"]

#: ONNX Runtime intra-op threads of the OCR sessions ($CARCHECK_OCR_THREADS, default 2).
THREADS = int(os.environ.get("CARCHECK_OCR_THREADS", "2"))
#: what a report names as the reader
ENGINE_NAME = "rapidocr-onnxruntime (PP-OCRv4 det + rec, ONNX)"

#: the plate reader's text detector scales a crop's shorter side to this many px. The package default, 736,
#: is meant for whole photos: on the dev cases' plate crops it read 0.885 of the legible plates exactly at a
#: median 252 ms a crop, 160 px 0.836 at 33 ms (bench/accuracy/plates.py, docs/identity.md)
PLATE_DET_SIDE = 160

_engine = None
_plate_engine = None
_lock = threading.Lock()


@dataclass(frozen=True)
class TextLine:
    """One line of text found in a photo.

    Attributes:
        text: the characters read, as the recogniser gives them (no rules applied).
        box: the line's 4 corners ``((x, y), ...)`` in pixels of the array given, clockwise from top-left.
        score: the recogniser's confidence (mean character probability, a fraction).
    """

    text: str
    box: tuple[tuple[float, float], ...]
    score: float


def engine():
    """The process's OCR engine (built on first use, then reused; thread-safe)."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                from rapidocr_onnxruntime import RapidOCR

                _engine = RapidOCR(intra_op_num_threads=THREADS, inter_op_num_threads=1)
    return _engine


def plate_engine():
    """The process's plate reader: the same ONNX models, text detection at :data:`PLATE_DET_SIDE` px and no
    angle classifier (built on first use, then reused; thread-safe)."""
    global _plate_engine
    if _plate_engine is None:
        with _lock:
            if _plate_engine is None:
                from rapidocr_onnxruntime import RapidOCR

                _plate_engine = RapidOCR(intra_op_num_threads=THREADS, inter_op_num_threads=1, use_cls=False,
                                         det_limit_side_len=PLATE_DET_SIDE, det_limit_type="min")
    return _plate_engine


def read_plate(crop: np.ndarray) -> list[tuple[str, float]]:
    """The text lines ``[(text, score)]`` in a licence-plate crop, RGB uint8 ``(h, w, 3)`` (the rules of what a
    plate read is are :func:`carcheck.pipeline.plate.plate_text`).

    Raises:
        ValueError: not an ``(h, w, 3)`` uint8 array.
    """
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"read_plate needs an (h, w, 3) uint8 RGB crop, got {getattr(crop, 'shape', type(crop))}")
    result, _ = plate_engine()(np.ascontiguousarray(crop[:, :, ::-1]), use_cls=False)
    return [(str(text), float(score)) for _, text, score in (result or [])]


def read_text(image: np.ndarray, min_score: float = 0.5) -> list[TextLine]:
    """Text lines in an RGB ``uint8`` image ``(H, W, 3)``, top to bottom.

    Args:
        image: the photo (RGB; an ``(H, W)`` grey or ``(H, W, 4)`` RGBA array is converted).
        min_score: lines the recogniser scores below this are dropped.
    Raises:
        ValueError: not a uint8 image array.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"read_text needs an (H, W, 3) uint8 RGB array, got {getattr(image, 'shape', type(image))}")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.shape[2] != 3:
        raise ValueError(f"read_text needs 3 channels, got {image.shape[2]}")
    bgr = np.ascontiguousarray(image[:, :, ::-1])  # RapidOCR takes an array as OpenCV's BGR
    result, _ = engine()(bgr, text_score=min_score)
    lines = [TextLine(str(text), tuple((float(x), float(y)) for x, y in box), float(score))
             for box, text, score in (result or [])]
    lines.sort(key=lambda t: (min(p[1] for p in t.box), min(p[0] for p in t.box)))
    return lines
