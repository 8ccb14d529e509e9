"""The one place where carcheck opens image files.

Every reader, trainer and the assessment load photos through :func:`load_image` (or
:func:`decode_image`, which also returns the photo's original size), so EXIF orientation,
colour-mode conversion and the size policy are applied the same way everywhere, and every
failure is an :class:`ImageLoadError` that names the file and the cause: whatever a file raises
while it is examined, read, decoded, oriented or converted, nothing else leaves these functions.

Size policy (pixels are width x height of the file as declared in its header):

- a file that declares more than :data:`MAX_PIXELS` (250 MP; the largest phone cameras make
  200 MP photos) or whose pixels would expand more than :data:`MAX_EXPANSION` times beyond the
  file's size (above :data:`EXPANSION_MIN_PIXELS`) is refused as a decompression bomb;
- a photo larger than the caller's ``max_decoded_pixels`` is decoded at reduced size: JPEG (and
  MPO) with libjpeg's DCT scaling (PIL's ``draft()``: 1/2, 1/4, 1/8, the full-size image is never
  in memory), then every format is reduced by an integer box filter (``Image.reduce``);
- formats without reduced decoding (PNG, TIFF, WebP, ...) are decoded at full size only when the
  decode buffer fits :data:`MAX_DECODE_BYTES` (256 MiB: a 64 MP RGB PNG); larger ones are refused
  with that reason. Camera photos of any size are JPEG and always fit.

Importing this module raises Pillow's own bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89 MP
by default, which refuses 108 MP phone photos) to :data:`MAX_PIXELS` and silences Pillow's
``DecompressionBombWarning``; the checks above replace both.
"""

from __future__ import annotations

import errno
import math
import os
import stat as _stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageLoadError", "DecodedImage", "decode_image", "load_image", "is_image_path",
           "display_name", "MAX_PIXELS", "MAX_DECODE_BYTES", "MAX_EXPANSION", "EXPANSION_MIN_PIXELS",
           "DEFAULT_MAX_DECODED_PIXELS", "IMAGE_SUFFIXES"]

#: Largest image accepted, in declared pixels (width * height). The largest phone cameras make
#: 200 MP photos (16320 x 12240); a header declaring more is refused as a decompression bomb.
MAX_PIXELS = 250_000_000

#: Largest full-size decode buffer, in bytes, for formats that cannot decode at reduced size
#: (Pillow holds RGB/RGBA as 4 bytes per pixel: 256 MiB is a 64 MP RGB PNG).
MAX_DECODE_BYTES = 256 * 2 ** 20

#: An image declaring more than :data:`EXPANSION_MIN_PIXELS` whose raw pixels (width * height *
#: bands bytes) exceed its file size by more than this factor is refused as a decompression bomb
#: (camera JPEGs expand about 10x, smooth upscaled ones well under 200x).
MAX_EXPANSION = 1000

#: Pixels above which :data:`MAX_EXPANSION` applies (small flat images compress that well too).
EXPANSION_MIN_PIXELS = 16_000_000

#: Default ``max_decoded_pixels`` of :func:`load_image` / :func:`decode_image`: larger photos are
#: decoded at reduced size (a 64 MP photo comes back whole, a 108 MP one at 1/2 per side).
DEFAULT_MAX_DECODED_PIXELS = 65_000_000

#: File suffixes treated as images when scanning folders (lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: Formats that decode at 1/2, 1/4, 1/8 size directly (PIL ``draft()``).
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})

#: Formats never opened: EPS is rendered by an external program (Ghostscript).
_EXCLUDED_FORMATS = frozenset({"EPS"})

if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow warns above this and refuses above twice this
# the warning says what :func:`decode_image` then refuses with a reason (a filter, not
# warnings.catch_warnings: that is not thread-safe, and photos are decoded in a thread)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

#: EXIF orientation -> the array operation that makes the photo upright (as PIL's
#: ``ImageOps.exif_transpose``, which is not used: it also re-serialises the EXIF block and raises
#: ``struct.error`` / ``AttributeError`` on real photos whose EXIF holds a tag of the wrong type,
#: and it copies the whole image even when nothing turns).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, -1)[::-1],
           8: lambda a: np.rot90(a, 1)}


def display_name(path: str | Path) -> str:
    """A file name as printable, JSON- and HTML-safe text.

    A name that is not valid UTF-8 reaches Python with surrogate escapes (PEP 383), which no UTF-8
    writer accepts; each such byte is written as ``\\xNN`` instead (the rest is unchanged). Use
    ``os.fsencode`` on the original path for the exact bytes.
    """
    return _safe_text(os.fspath(path))


def _safe_text(text: str) -> str:
    """``text`` with surrogate escapes (undecodable bytes) replaced by ``\\xNN`` (any other lone
    surrogate by ``\\udNNN``)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ImageLoadError(ValueError):
    """An image file could not be used.

    Attributes:
        path: the file, as :func:`display_name` text (safe to print and serialise).
        reason: why, in words (also safe text; at most about 300 characters).
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = display_name(path)
        reason = _safe_text(str(reason))
        self.reason = reason if len(reason) <= 300 else reason[:297] + "..."
        super().__init__(f"{self.path}: {self.reason}")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded photo.

    Attributes:
        array: ``(h, w, 3)`` ``uint8`` RGB, upright; smaller than ``width x height`` when the photo
            was decoded at reduced size.
        width / height: the upright photo's full size in pixels (from the file's header).
        format: Pillow's format name (``JPEG``, ``PNG``, ...).
    """

    array: np.ndarray
    width: int
    height: int
    format: str | None

    @property
    def reduced(self) -> bool:
        """True when ``array`` is smaller than the photo."""
        return self.array.shape[:2] != (self.height, self.width)


def is_image_path(path: str | Path) -> bool:
    """True when ``path`` has an image suffix (the content is not checked)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _entry_problem(p: Path) -> tuple[str | None, int]:
    """``(reason, size in bytes)``: why the directory entry ``p`` cannot be an image file (None
    when it is a non-empty regular file, or a symbolic link to one). Uses ``lstat``/``stat`` only:
    a FIFO or a device is never opened."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return "file not found", 0
    except NotADirectoryError:
        return "file not found (a parent in its path is not a folder)", 0
    except PermissionError:
        return "cannot be examined: permission denied (on its folder)", 0
    except (OSError, ValueError) as e:  # ENAMETOOLONG, ELOOP, embedded NUL byte...
        return f"cannot be examined ({getattr(e, 'strerror', None) or e})", 0
    if _stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            try:
                target = os.readlink(p)
            except OSError:
                target = "?"
            return f"broken symbolic link (its target {display_name(target)} does not exist)", 0
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "symbolic link loop", 0
            return f"symbolic link cannot be followed ({e.strerror})", 0
        if _stat.S_ISDIR(st.st_mode):
            return ("not a regular file: a symbolic link to a folder (folders inside a folder are read, "
                    "linked ones are not followed; give the folder itself)"), 0
    kind = _kind(st.st_mode)
    if kind == "a folder":
        try:
            os.scandir(p).close()
        except OSError as e:
            return f"not a regular file: a folder that cannot be listed ({e.strerror or e})", 0
    if kind is not None:
        return f"not a regular file: {kind}", 0
    if st.st_size == 0:
        return "empty file (0 bytes)", 0
    return None, st.st_size


def _kind(mode: int) -> str | None:
    """Name of a non-regular file type (None for a regular file)."""
    if _stat.S_ISREG(mode):
        return None
    for test, name in ((_stat.S_ISDIR, "a folder"), (_stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (_stat.S_ISSOCK, "a socket"), (_stat.S_ISCHR, "a character device"),
                       (_stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def _open_regular(p: Path):
    """Open ``p`` for reading without blocking (a FIFO swapped in after the check cannot hang
    us) and confirm it is a regular file. Returns ``(file object, size in bytes)``.

    Raises:
        ImageLoadError: when it cannot be opened or is not a regular file.
    """
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except PermissionError:
        raise ImageLoadError(p, "cannot read the file: permission denied") from None
    except OSError as e:
        raise ImageLoadError(p, f"cannot open the file ({e.strerror or e})") from None
    st = os.fstat(fd)
    kind = _kind(st.st_mode)
    if kind is not None:
        os.close(fd)
        raise ImageLoadError(p, f"not a regular file: {kind}")
    return os.fdopen(fd, "rb"), st.st_size


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1-8 (1 when absent, unreadable or out of range)."""
    try:
        value = img.getexif().get(0x0112, 1)
        if isinstance(value, (tuple, list)):
            value = value[0]
        value = int(value)
    except Exception:  # corrupt EXIF of any kind: the pixels are still fine
        return 1
    return value if value in _ORIENT else 1


def _upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W, 3)`` array turned upright for an EXIF ``orientation`` (1-8), C-contiguous."""
    op = _ORIENT.get(orientation)
    return arr if op is None else np.ascontiguousarray(op(arr))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (1, L, LA, La, P, PA, RGBA, RGBa, I;16*, I, F, CMYK, YCbCr, LAB, HSV)
    to 8-bit RGB.

    Transparent pixels are composited on white; 16-bit and float images are scaled to 0-255
    from their own range of finite values (NaN and infinities become the lowest value).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "La":
        img, mode = img.convert("LA"), "LA"
    if mode == "RGBa":
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        finite = np.isfinite(arr)
        if finite.any():
            lo, hi = float(arr[finite].min()), float(arr[finite].max())
        else:
            lo = hi = 0.0
        arr = np.where(finite, arr, lo)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = ((arr - lo) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return img.convert("RGB")


def _buffer_bytes(mode: str, size: tuple[int, int]) -> int:
    """Bytes of Pillow's decode buffer for ``mode`` at ``size`` (RGB is stored as 4 bytes/px)."""
    try:
        bands = Image.getmodebands(mode)
    except Exception:
        bands = 4
    per = 4 if bands > 1 or mode in ("I", "F") else 2 if "16" in mode else 1
    return size[0] * size[1] * per


_OPEN_FORMATS: list[str] = []


def _formats() -> list[str]:
    """Every format Pillow opens, less :data:`_EXCLUDED_FORMATS` (plugins loaded once)."""
    if not _OPEN_FORMATS:
        Image.init()
        _OPEN_FORMATS.extend(f for f in Image.OPEN if f not in _EXCLUDED_FORMATS)
    return _OPEN_FORMATS


def _signature(fp) -> str:
    """The first bytes of a file as text, for "not an image" reasons."""
    try:
        fp.seek(0)
        head = fp.read(12)
    except Exception:
        return ""
    return f"; it starts with {head!r}" if head else ""


def decode_image(path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int = 1,
                 max_decoded_pixels: int | None = DEFAULT_MAX_DECODED_PIXELS,
                 max_decode_bytes: int = MAX_DECODE_BYTES) -> DecodedImage:
    """Decode an image file as upright RGB, within a memory bound.

    Args:
        path: image file (JPEG, PNG, BMP, WebP, TIFF, GIF, AVIF, JPEG 2000, ...; any PIL mode;
            the first frame of a multi-frame file).
        max_pixels: refuse files declaring more pixels (width * height) than this (bombs).
        min_side: refuse photos whose shorter side is below this many pixels.
        max_decoded_pixels: photos with more pixels are decoded at reduced size, to at most this
            many pixels (JPEG: DCT-domain scaling; then an integer box filter); None: full size.
        max_decode_bytes: largest full-size decode buffer in bytes for formats that cannot decode
            at reduced size.

    Returns:
        :class:`DecodedImage` (array ``(h, w, 3)`` ``uint8`` plus the photo's full upright size).

    Raises:
        ImageLoadError: naming the file and the cause, for anything that goes wrong: missing,
            not a regular file (folder, FIFO, socket, device, broken link), unreadable, empty,
            not an image, truncated or corrupt, a decompression bomb, too large for the memory
            bound, smaller than ``min_side``, or any other exception while decoding.
    """
    p = Path(path)
    problem, _ = _entry_problem(p)
    if problem is not None:
        raise ImageLoadError(p, problem)
    fp, file_size = _open_regular(p)
    try:
        return _decode(p, fp, file_size, max_pixels, min_side, max_decoded_pixels, max_decode_bytes)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not an image file (format not recognised" + _signature(fp) + ")") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(p, f"image too large (decompression bomb guard): {e}") from None
    except MemoryError:
        raise ImageLoadError(p, "not enough memory to decode the image") from None
    except OSError as e:  # truncated / corrupt data
        raise ImageLoadError(p, f"corrupt or truncated image: {e}") from None
    except Exception as e:  # the failure boundary of one file: e.g. RuntimeError from a corrupt AVIF
        raise ImageLoadError(p, f"unreadable image ({type(e).__name__}: {e})") from None
    finally:
        fp.close()


def _decode(p: Path, fp, file_size: int, max_pixels: int, min_side: int, max_decoded_pixels: int | None,
            max_decode_bytes: int) -> DecodedImage:
    with Image.open(fp, formats=_formats()) as img:
        w, h = img.size
        fmt = img.format
        if w <= 0 or h <= 0:
            raise ImageLoadError(p, f"image declares an empty size {w}x{h}")
        if w * h > max_pixels:
            raise ImageLoadError(p, f"image too large (decompression bomb guard): declares {w}x{h} = "
                                    f"{w * h / 1e6:.0f} MP > limit {max_pixels / 1e6:.0f} MP")
        raw = w * h * len(img.getbands())
        if w * h > EXPANSION_MIN_PIXELS and raw > MAX_EXPANSION * file_size:
            raise ImageLoadError(p, f"image too large (decompression bomb guard): {w}x{h} px would expand "
                                    f"{file_size} bytes {raw / file_size:.0f}-fold (limit {MAX_EXPANSION}-fold)")
        orientation = _orientation(img)
        uw, uh = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
        if min(uw, uh) < min_side:
            raise ImageLoadError(p, f"image too small: {uw}x{uh} px (min side {min_side} px)")
        target = max_decoded_pixels
        if target is not None and w * h > target and fmt in _DRAFT_FORMATS:
            # the smallest DCT scale 1/s that fits the target and the memory bound; draft() picks
            # the largest s with size >= the requested one, so ask for floor(w / s) x floor(h / s)
            s = _draft_scale(w, h, img.mode, target, max_decode_bytes)
            if w // s and h // s:
                img.draft(None, (w // s, h // s))
        need = _buffer_bytes(img.mode, img.size)
        if need > max_decode_bytes:
            raise ImageLoadError(p, f"image too large to decode within the memory bound: {w}x{h} px {fmt} "
                                    f"needs {need / 2 ** 20:.0f} MiB (limit {max_decode_bytes / 2 ** 20:.0f} MiB)"
                                    + ("" if fmt in _DRAFT_FORMATS else f"; {fmt} cannot be decoded at reduced size"))
        img.load()  # decode now, so truncation shows here
        out: Image.Image = img
        if target is not None and out.width * out.height > target:
            f = math.ceil(math.sqrt(out.width * out.height / target))
            try:
                out = out.reduce(f)
            except ValueError:  # modes reduce() does not take (1, P): nearest neighbour keeps the palette
                out = out.resize((max(1, math.ceil(out.width / f)), max(1, math.ceil(out.height / f))),
                                 Image.Resampling.NEAREST)
        arr = _to_array(_to_rgb(out))
        del out
        img.close()  # frees the decode buffer before the turned copy is made
        return DecodedImage(_upright(arr, orientation), uw, uh, fmt)


def _to_array(rgb: Image.Image, strip_bytes: int = 16 * 2 ** 20) -> np.ndarray:
    """A writable ``(h, w, 3)`` ``uint8`` copy of an RGB image. A large image is copied in row
    strips of about ``strip_bytes`` bytes, so only one full-size copy exists besides Pillow's."""
    w, h = rgb.size
    if w * h * 3 <= strip_bytes:
        return np.array(rgb, dtype=np.uint8)
    arr = np.empty((h, w, 3), dtype=np.uint8)
    step = max(1, strip_bytes // (w * 3))
    for y in range(0, h, step):
        arr[y:y + step] = np.asarray(rgb.crop((0, y, w, min(h, y + step))), dtype=np.uint8)
    return arr


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int = 1,
               max_decoded_pixels: int | None = DEFAULT_MAX_DECODED_PIXELS) -> np.ndarray:
    """Load an image file as an RGB array with EXIF orientation applied.

    Args:
        path: image file (see :func:`decode_image`).
        max_pixels: refuse images declaring more pixels than this (decompression bombs).
        min_side: refuse images whose shorter side is below this many pixels.
        max_decoded_pixels: photos with more pixels come back reduced to at most this many pixels
            (aspect kept); None: full size (still within :data:`MAX_DECODE_BYTES` for formats that
            cannot decode at reduced size).

    Returns:
        ``np.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB, upright as the
        EXIF orientation tag says (H and W are those of the upright image, reduced as above).

    Raises:
        ImageLoadError: naming the file and the cause (see :func:`decode_image`); never any
            other exception.
    """
    return decode_image(path, max_pixels=max_pixels, min_side=min_side, max_decoded_pixels=max_decoded_pixels).array


def _draft_scale(w: int, h: int, mode: str, target: int, max_decode_bytes: int) -> int:
    """The DCT scale 1/s (s in 2, 4, 8) :func:`decode_image` asks libjpeg for: the smallest that
    fits ``target`` pixels and ``max_decode_bytes`` (8 when none does)."""
    return next((s for s in (2, 4, 8) if -(-w // s) * -(-h // s) <= target
                 and _buffer_bytes(mode, (-(-w // s), -(-h // s))) <= max_decode_bytes), 8)
