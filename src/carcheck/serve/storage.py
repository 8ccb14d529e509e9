"""Content-addressed photo storage under the data dir.

``DATA_DIR/blobs/ab/abcdef...`` holds each original once, named by its SHA-256 (hex); originals are
never served. ``DATA_DIR/derived/ab/abcdef....jpg`` is the privacy-blurred JPEG derivative
(:func:`carcheck.report.privacy.blur_private_regions`), the only form of a photo a viewer gets.
Every file appears by an atomic rename from ``DATA_DIR/tmp``, so a crash never leaves half a file
under its final name. Reports live in ``DATA_DIR/reports/<case>/<job>/``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

__all__ = ["PhotoStore", "safe_filename", "SHA256_RE"]

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: largest side of the served derivative, px
DERIVED_MAX_SIDE = 1600


def safe_filename(name: str | None, limit: int = 200) -> str:
    """A client's file name as printable text to store and show: the last path component, control
    characters replaced, at most ``limit`` characters; ``"upload"`` when nothing is left. Never
    used to build a path."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if c.isprintable() else "_" for c in name).strip()
    name = name.encode("utf-8", "replace").decode("utf-8", "replace")
    if name in ("", ".", ".."):
        return "upload"
    return name[:limit]


class PhotoStore:
    """The data dir's photo files (originals by SHA-256, blurred derivatives, reports, temporary files)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir).resolve()
        for sub in ("blobs", "derived", "reports", "tmp", "work"):  # private folders whatever the umask
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def _check(self, sha256: str) -> str:
        if not SHA256_RE.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return sha256

    def blob_path(self, sha256: str) -> Path:
        """Where the original with this digest lives (it may not exist)."""
        self._check(sha256)
        return self.root / "blobs" / sha256[:2] / sha256

    def derived_path(self, sha256: str) -> Path:
        """Where the blurred derivative of this digest lives (it may not exist yet)."""
        self._check(sha256)
        return self.root / "derived" / sha256[:2] / f"{sha256}.jpg"

    def temp_file(self, suffix: str = "") -> tuple[int, Path]:
        """A new temporary file in the data dir (same file system as the store: renames are atomic)."""
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", suffix=suffix)
        return fd, Path(name)

    def put(self, tmp: Path, sha256: str) -> Path:
        """Move the temporary file ``tmp`` (whose content has digest ``sha256``) into the store; a
        blob that is already there is kept and ``tmp`` removed. Returns the blob's path."""
        dest = self.blob_path(sha256)
        if dest.exists():
            tmp.unlink(missing_ok=True)
            return dest
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)
        return dest

    def derivative(self, sha256: str) -> Path:
        """The privacy-blurred JPEG of a stored photo (made on first use, at most
        :data:`DERIVED_MAX_SIDE` px on its longer side).

        Raises:
            FileNotFoundError: no original with this digest.
            carcheck.data.images.ImageLoadError: the original cannot be decoded.
        """
        out = self.derived_path(sha256)
        if out.exists():
            return out
        src = self.blob_path(sha256)
        if not src.exists():
            raise FileNotFoundError(f"no stored photo {sha256}")
        from PIL import Image

        from ..data.images import load_image
        from ..report.privacy import blur_private_regions

        image = load_image(src, max_decoded_pixels=DERIVED_MAX_SIDE * DERIVED_MAX_SIDE)
        im = Image.fromarray(image)
        if max(im.size) > DERIVED_MAX_SIDE:
            im.thumbnail((DERIVED_MAX_SIDE, DERIVED_MAX_SIDE))
        import numpy as np

        blurred, _ = blur_private_regions(np.asarray(im))
        fd, tmp = self.temp_file(".jpg")
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(blurred).save(f, "JPEG", quality=85)
        out.parent.mkdir(exist_ok=True)
        os.replace(tmp, out)
        return out

    def report_dir(self, case_public_id: str, job_public_id: str) -> Path:
        """Folder of one job's report.json / report.html."""
        return self.root / "reports" / case_public_id / job_public_id
