"""The inputs of one case, before any model runs: which entries the case has, and which decoded
photos cannot be judged or repeat an earlier one.

- :func:`expand_inputs` turns files and folders into the case's entries. It looks at folder
  entries with ``lstat`` only (nothing is opened here), so a broken symbolic link, a FIFO, a
  socket, a device or an unreadable folder becomes an entry of its own, which the loader then
  fails with its reason: every entry of a folder is in the report. Hidden files and OS clutter
  (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``) are left out and listed as ignored.
- :func:`blank_reason` / :func:`too_small_reason` name photos the models cannot judge: blank or
  near-constant images (black, white, one colour, a fully transparent PNG, a NaN TIFF) and images
  whose shorter side is below the size the damage models need.
- :class:`DuplicateFinder` finds exact and near duplicates within a case (the same photo given
  twice, re-encoded or resized): 64-bit pHash and dHash (``imagehash``) both within a Hamming
  distance, so a repeated photo counts once when findings are reconciled across views.
- :func:`exact_name_bytes` keeps a file name that is not valid UTF-8 losslessly (base64 of its
  bytes) beside its printable form (:func:`~carcheck.data.images.display_name`).

Measured on the shared data (``bench/accuracy/fuzz.py`` re-checks it): distinct photos of one case or one
car model are >= 19 bits apart (max of the pHash and dHash distances), JPEG re-encodes (quality 50)
and 1/3-size copies <= 5 bits; real photos have a grey-level standard deviation >= 15.8 and a
1-99 percentile range >= 74 levels.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import imagehash
import numpy as np
from PIL import Image

from ..schema import AssessConfig

__all__ = ["CaseInputs", "expand_inputs", "collect_photos", "exact_name_bytes", "blank_reason", "too_small_reason",
           "DuplicateFinder", "IGNORED_NAMES", "MIN_SIDE", "BLANK_MAX_STD", "BLANK_MAX_RANGE",
           "DUPLICATE_MAX_DISTANCE"]

#: Files in a folder that are ignored (listed as ignored, not assessed): OS clutter.
IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})

#: Shorter side in pixels below which a photo is too small to judge (a 32x32 thumbnail upscaled
#: to the 512 px network input got 10 damage detections).
MIN_SIDE: int = AssessConfig.model_fields["min_side"].default

#: A photo whose grey levels (0-255) have a standard deviation below this, or ...
BLANK_MAX_STD: float = AssessConfig.model_fields["blank_max_std"].default
#: ... whose 1st-99th percentile range is below this many levels, is blank / near-constant.
BLANK_MAX_RANGE: float = AssessConfig.model_fields["blank_max_range"].default

#: Two photos are near duplicates when both their 64-bit pHash and dHash differ in at most this
#: many bits (and their aspect ratios within 10 %).
DUPLICATE_MAX_DISTANCE: int = AssessConfig.model_fields["duplicate_max_distance"].default


@dataclass
class CaseInputs:
    """The entries of one case.

    Attributes:
        files: every entry to report on, in order: the given paths, and for each given folder its
            entries (recursively, sorted by path), special and broken ones included.
        ignored: hidden entries and OS clutter inside the given folders (not assessed).
    """

    files: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def _expand_folder(folder: Path, out: CaseInputs) -> None:
    """Entries under ``folder`` (iterative walk; symbolic links to folders are entries, not
    followed, so a link loop cannot recurse)."""
    found: list[Path] = []
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            if d != folder:
                found.append(d)  # an unreadable sub-folder: the loader names why it fails
            else:
                out.files.append(d)
            continue
        for e in entries:
            p = Path(e.path)
            if _is_ignored(e.name):
                out.ignored.append(p)
                continue
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(p)
            else:
                found.append(p)
    out.files.extend(sorted(found))


def expand_inputs(inputs: Sequence[str | Path]) -> CaseInputs:
    """Expand files and folders into the case's entries (see :class:`CaseInputs`).

    A given path that is a folder (or a link to one) is walked; anything else is kept as given,
    a missing path included (it fails in the report as "file not found"). Never raises for a
    bad entry; no entry is opened.
    """
    out = CaseInputs()
    for raw in inputs:
        p = Path(raw)
        try:
            is_dir = p.is_dir()
        except (OSError, ValueError):
            is_dir = False
        if is_dir:
            _expand_folder(p, out)
        else:
            out.files.append(p)
    return out


def collect_photos(inputs: Sequence[str | Path]) -> list[Path]:
    """The entries of :func:`expand_inputs` (files given, and every non-hidden entry of the folders
    given, recursively, sorted), without the ignored ones."""
    return expand_inputs(inputs).files


def exact_name_bytes(path: str | Path) -> str | None:
    """Base64 of the exact bytes of ``path`` when it is not valid UTF-8 (its printable form,
    :func:`~carcheck.data.images.display_name`, then differs from it); None otherwise."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return base64.b64encode(os.fsencode(text)).decode("ascii")


def _grey_sample(image: np.ndarray, size: int = 256) -> np.ndarray:
    """Grey levels of ``image`` (``(H, W, 3)`` uint8) on a grid of at most ``size`` x ``size``."""
    h, w = image.shape[:2]
    sy, sx = max(1, h // size), max(1, w // size)
    return image[::sy, ::sx].astype(np.float32).mean(axis=2)


def blank_reason(image: np.ndarray, max_std: float = BLANK_MAX_STD, max_range: float = BLANK_MAX_RANGE) -> str | None:
    """Why ``image`` is blank / near-constant (None when it is not).

    Args:
        image: ``(H, W, 3)`` ``uint8`` RGB.
        max_std: grey-level standard deviation (0-255 scale) below which the image is blank.
        max_range: 1st-99th percentile grey-level range below which the image is blank.
    """
    g = _grey_sample(image)
    std = float(g.std())
    lo, hi = (float(v) for v in np.percentile(g, [1, 99]))
    if std < max_std or hi - lo < max_range:
        return (f"blank or near-constant image (grey-level std {std:.1f}, 1-99 % range {hi - lo:.0f} levels; "
                f"a photo needs std >= {max_std:g} and range >= {max_range:g})")
    return None


def too_small_reason(width: int, height: int, min_side: int = MIN_SIDE) -> str | None:
    """Why a ``width`` x ``height`` px photo is too small to judge (None when it is not)."""
    if min(width, height) < min_side:
        return f"too small to judge: {width}x{height} px (the shorter side needs >= {min_side} px)"
    return None


@dataclass
class _Seen:
    name: str
    digest: bytes
    phash: imagehash.ImageHash
    dhash: imagehash.ImageHash
    aspect: float


class DuplicateFinder:
    """Exact and near duplicates among the photos of one case, in the order they are added.

    Args:
        max_distance: Hamming distance (bits of 64) within which both pHash and dHash must be.
    """

    def __init__(self, max_distance: int = DUPLICATE_MAX_DISTANCE) -> None:
        self.max_distance = max_distance
        self._seen: list[_Seen] = []

    def check(self, name: str, image: np.ndarray) -> str | None:
        """Record photo ``name`` and return the name of an earlier photo it duplicates (then it is
        not recorded), or None.

        Args:
            name: the photo's display name.
            image: its ``(H, W, 3)`` ``uint8`` RGB pixels.
        Returns:
            ``"duplicate of <name>"`` or ``"near duplicate of <name> (hash distance N bits)"``, or None.
        """
        h, w = image.shape[:2]
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest() + f"{h}x{w}".encode()
        thumb = Image.fromarray(image)
        thumb.thumbnail((512, 512))
        ph, dh = imagehash.phash(thumb), imagehash.dhash(thumb)
        aspect = w / h
        for s in self._seen:
            if s.digest == digest:
                return f"duplicate of {s.name}"
            if abs(aspect / s.aspect - 1) <= 0.1:
                d = max(ph - s.phash, dh - s.dhash)
                if d <= self.max_distance:
                    return f"near duplicate of {s.name} (hash distance {d} bits)"
        self._seen.append(_Seen(name, digest, ph, dh, aspect))
        return None
