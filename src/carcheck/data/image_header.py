"""What the header of an image file says, without decoding its pixels: its upright size (:func:`image_size`)
and the largest buffer :func:`~.images.decode_image` would allocate for it (:func:`decode_buffer_bytes`).
The same checks and openers as :mod:`.images` (one loader), so a file refused there is refused here.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .images import (_DRAFT_FORMATS, DEFAULT_MAX_DECODED_PIXELS, MAX_DECODE_BYTES, MAX_PIXELS, ImageLoadError,
                     _buffer_bytes, _draft_scale, _entry_problem, _formats, _open_regular, _orientation)

__all__ = ["decode_buffer_bytes", "image_size"]


def decode_buffer_bytes(path: str | Path, *, max_decoded_pixels: int | None = DEFAULT_MAX_DECODED_PIXELS,
                        max_decode_bytes: int = MAX_DECODE_BYTES) -> int:
    """Bytes of the largest buffer :func:`decode_image` would allocate for this file, from its
    header only (no pixels are decoded): the DCT-scaled size for JPEG, the full size for formats
    that cannot decode at reduced size (a 48 MP PNG: 192 MiB), 0 when the file would be refused
    before decoding or cannot be examined (:func:`decode_image` then says why).

    Lets a caller keep large decodes from overlapping other memory-heavy work (the assessment
    decodes the next photo in a thread while the networks run on the current one).

    Args:
        path: the file.
        max_decoded_pixels, max_decode_bytes: as :func:`decode_image` is called with.
    Returns:
        bytes (int); never raises.
    """
    p = Path(path)
    try:
        problem, _ = _entry_problem(p)
        if problem is not None:
            return 0
        fp, _ = _open_regular(p)
    except Exception:
        return 0
    try:
        with Image.open(fp, formats=_formats()) as img:
            w, h = img.size
            if w <= 0 or h <= 0 or w * h > MAX_PIXELS:
                return 0
            if max_decoded_pixels is not None and w * h > max_decoded_pixels and img.format in _DRAFT_FORMATS:
                s = _draft_scale(w, h, img.mode, max_decoded_pixels, max_decode_bytes)
                w, h = -(-w // s), -(-h // s)
            need = _buffer_bytes(img.mode, (w, h))
            return need if need <= max_decode_bytes else 0
    except Exception:
        return 0
    finally:
        fp.close()


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` in pixels of the upright image, read from the header only.

    Raises:
        ImageLoadError: naming the file, when it cannot be opened as an image (never any other
            exception).
    """
    p = Path(path)
    problem, _ = _entry_problem(p)
    if problem is not None:
        raise ImageLoadError(p, problem)
    fp, _ = _open_regular(p)
    try:
        with Image.open(fp, formats=_formats()) as img:
            w, h = img.size
            orientation = _orientation(img)
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not an image file (format not recognised)") from None
    except Exception as e:
        raise ImageLoadError(p, f"unreadable image ({type(e).__name__}: {e})") from None
    finally:
        fp.close()
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
