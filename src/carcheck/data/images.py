"""The one place where carcheck opens image files.

Every reader, trainer and the assessment load photos through :func:`load_image`, so
EXIF orientation, colour-mode conversion and the decompression-bomb limit are applied
the same way everywhere, and every failure names the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageLoadError", "load_image", "MAX_PIXELS", "IMAGE_SUFFIXES", "is_image_path"]

#: Largest image accepted, in pixels (width * height). 64 MP covers any phone camera;
#: larger files are rejected as possible decompression bombs.
MAX_PIXELS = 64_000_000

#: File suffixes treated as images when scanning folders (lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class ImageLoadError(ValueError):
    """An image file could not be used. ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_path(path: str | Path) -> bool:
    """True when ``path`` has an image suffix (the content is not checked)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, I;16, I, F, CMYK, YCbCr, ...) to 8-bit RGB.

    Transparent pixels are composited on white; 16-bit and float images are scaled
    to 0-255 from their own range.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = ((arr - lo) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int = 1) -> np.ndarray:
    """Load an image file as an RGB array with EXIF orientation applied.

    Args:
        path: image file (JPEG, PNG, BMP, WebP, TIFF; any PIL mode).
        max_pixels: refuse images with more pixels than this (decompression bombs).
        min_side: refuse images whose shorter side is below this many pixels.

    Returns:
        ``np.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB, upright as the
        EXIF orientation tag says (H and W are those of the upright image).

    Raises:
        ImageLoadError: naming the file, when it is missing, empty, not an image,
            truncated or corrupt, larger than ``max_pixels`` or smaller than ``min_side``.
    """
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "file not found")
    if not p.is_file():
        raise ImageLoadError(p, "not a regular file")
    if p.stat().st_size == 0:
        raise ImageLoadError(p, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(p, f"image too large: {w}x{h} = {w * h} px > limit {max_pixels} px")
                img.load()  # decode now, so truncation shows here
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
                arr = np.asarray(rgb, dtype=np.uint8).copy()
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not an image file (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(p, f"image too large (decompression bomb guard): {e}") from None
    except OSError as e:  # truncated / corrupt data
        raise ImageLoadError(p, f"corrupt or truncated image: {e}") from None
    except (ValueError, SyntaxError, TypeError) as e:
        raise ImageLoadError(p, f"unreadable image: {e}") from None
    if min(arr.shape[:2]) < min_side:
        raise ImageLoadError(p, f"image too small: {arr.shape[1]}x{arr.shape[0]} px (min side {min_side} px)")
    return arr


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` in pixels of the upright image, read from the header only.

    Raises:
        ImageLoadError: naming the file, when it cannot be opened as an image.
    """
    p = Path(path)
    try:
        with Image.open(p) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageLoadError(p, "file not found") from None
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not an image file (format not recognised)") from None
    except OSError as e:
        raise ImageLoadError(p, f"unreadable image: {e}") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


__all__.append("image_size")
