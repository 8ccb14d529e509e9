"""Reused-photo check (issue 19): perceptual-hash index across cases, duplicates within a case, EXIF rules.

The commonest photo fraud pads a claim with photos of an earlier claim or from the web, usually resized,
re-encoded, slightly cropped or mirrored. Every assessed photo gets :class:`PhotoHashes`: a 256-bit pHash (DCT,
Zauner 2010) and a 256-bit dHash (gradient) of the whole photo, of its mirror image, and of sub-windows covering
crops of up to 10 % per side (imagehash, ``hash_size=16``). Two photos match when both hashes of one variant
pair are within ``max_phash`` / ``max_dhash`` bits (requiring both keeps false matches rare: measured in
``bench/accuracy/claims.py``):

- whole ~ whole: resized / re-encoded copy; mirrored whole ~ whole: mirrored copy;
- whole ~ a window of the other (either way round): one is a crop of the other (also mirrored).

:class:`ReuseIndex` keeps the hashes in a :class:`HashStore`: :class:`SQLiteHashStore` (one file, the CLI's
``--index FILE``) or :class:`MemoryHashStore`; the service can implement the same three-method protocol over
its own database table (``carcheck.serve.reuse_index``, per tenant; both stores write the rows of
:meth:`HashEntry.row`). Matching is a vectorised Hamming scan over all stored hashes (numpy), fine to some
100,000 photos; a larger store would add a BK-tree or multi-index hashing behind the same protocol.

EXIF rules (:mod:`.exif`, :func:`~.exif.exif_reasons`, pure) flag, inside one case: capture dates more than ``max_days`` apart,
photos from several camera models, and a Software tag that names editing software. They are review reasons,
not verdicts: a phone photo re-saved by a messenger loses its EXIF, and an honest claim can mix two phones.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import imagehash
import numpy as np
from PIL import Image

from ..schema import ReuseMatch
from .exif import PhotoMeta, exif_reasons, read_photo_meta

__all__ = ["PhotoHashes", "photo_hashes", "HashEntry", "ROW_COLUMNS", "HashStore", "MemoryHashStore", "SQLiteHashStore",
           "ReuseIndex", "reuse_check", "file_sha256", "MAX_PHASH", "MAX_DHASH", "WINDOWS"]

#: hash side: pHash and dHash of HASH_SIZE x HASH_SIZE bits each
HASH_SIZE = 16
#: Hamming thresholds (bits of HASH_SIZE**2 = 256) within which BOTH hashes must be for a match. Chosen on
#: bench/accuracy/claims.py: at 50 no pair of its 2,000 distinct photos matched while 99 % of edited copies did; at 60
#: the first distinct pairs (white studio shots of white cars) match; 64-bit hashes could not separate them.
MAX_PHASH = 50
MAX_DHASH = 50
#: sub-windows (x0, y0, x1, y1) as fractions of the photo: every crop removing <= 10 % of the width and
#: of the height lies within ~2.5 % of one of them
WINDOWS: tuple[tuple[float, float, float, float], ...] = tuple(
    (x0, y0, x0 + s, y0 + s) for s in (0.9, 0.95) for x0 in (0.0, (1 - s) / 2, 1 - s) for y0 in (0.0, (1 - s) / 2, 1 - s)
) + tuple((x0, 0.0, x0 + 0.9, 1.0) for x0 in (0.0, 0.05, 0.1)) + tuple((0.0, y0, 1.0, y0 + 0.9) for y0 in (0.0, 0.05, 0.1))
_THUMB = 256  # hashes are computed on a thumbnail of this longer side (the hashes resize to 8-32 px anyway)


def _pack(h: imagehash.ImageHash) -> np.ndarray:
    return np.packbits(h.hash.flatten())


@dataclass(frozen=True, eq=False)
class PhotoHashes:
    """Perceptual hashes of one photo.

    Attributes:
        bits: ``(2 + 2 * len(WINDOWS), 2, HASH_SIZE**2 // 8)`` uint8, the packed hash bits; rows: the whole photo,
            its left-right mirror, every :data:`WINDOWS` sub-window, every sub-window of the mirror; columns:
            pHash, dHash.
        aspect: width / height.
        sha256: hex digest of the file's bytes when hashed from a file ("" otherwise): exact copies.
    """

    bits: np.ndarray
    aspect: float
    sha256: str = ""

    def to_bytes(self) -> bytes:
        return np.ascontiguousarray(self.bits, dtype=np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, aspect: float, sha256: str = "") -> "PhotoHashes":
        """Inverse of :meth:`to_bytes` (raises ValueError for a blob of another hash size)."""
        a = np.frombuffer(blob, dtype=np.uint8)
        shape = (2 + 2 * len(WINDOWS), 2, HASH_SIZE * HASH_SIZE // 8)
        if a.size != int(np.prod(shape)):
            raise ValueError(f"stored hashes have {a.size} bytes, expected {int(np.prod(shape))} (another hash size?)")
        return cls(a.reshape(shape).copy(), aspect, sha256)


def _hash_pair(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    return _pack(imagehash.phash(img, hash_size=HASH_SIZE)), _pack(imagehash.dhash(img, hash_size=HASH_SIZE))


def photo_hashes(image: np.ndarray | Image.Image, sha256: str = "") -> PhotoHashes:
    """Hashes of one photo.

    Args:
        image: ``(H, W, 3)`` ``uint8`` RGB array (upright, as :func:`~carcheck.data.images.load_image` gives)
            or a PIL image.
        sha256: the file's digest, when known.
    Returns:
        :class:`PhotoHashes`.
    Raises:
        ValueError: an empty image.
    """
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    if img.width == 0 or img.height == 0:
        raise ValueError("empty image")
    img = img.convert("L")
    img.thumbnail((_THUMB, _THUMB), Image.Resampling.LANCZOS)
    mirror = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = img.size

    def windows(im: Image.Image) -> list[tuple[np.ndarray, np.ndarray]]:
        return [_hash_pair(im.crop((round(x0 * w), round(y0 * h), max(round(x1 * w), round(x0 * w) + 1),
                                    max(round(y1 * h), round(y0 * h) + 1))))
                for x0, y0, x1, y1 in WINDOWS]

    rows = [_hash_pair(img), _hash_pair(mirror), *windows(img), *windows(mirror)]
    return PhotoHashes(np.stack([np.stack(r) for r in rows]), w / h, sha256)


@dataclass(frozen=True)
class HashEntry:
    """One indexed photo: its case, its name (display path) and its hashes.

    :meth:`row` / :meth:`from_row` are the stored form every database store uses (the CLI's
    :class:`SQLiteHashStore`, the service's table in ``carcheck.serve.reuse_index``): the columns of
    :data:`ROW_COLUMNS`, the hashes as one BLOB of :meth:`PhotoHashes.to_bytes`.
    """

    case_id: str
    photo: str
    hashes: PhotoHashes

    def row(self) -> dict:
        """The entry as the stored columns (:data:`ROW_COLUMNS`: ``hashes`` bytes, ``hash_size`` int)."""
        return {"case_id": self.case_id, "photo": self.photo, "hash_size": HASH_SIZE, "aspect": self.hashes.aspect,
                "sha256": self.hashes.sha256, "hashes": self.hashes.to_bytes()}

    @classmethod
    def from_row(cls, case_id: str, photo: str, aspect: float, sha256: str, hashes: bytes) -> "HashEntry":
        """Inverse of :meth:`row` (stores select rows of ``hash_size == HASH_SIZE`` only; ValueError for a
        blob of another size)."""
        return cls(case_id, photo, PhotoHashes.from_bytes(bytes(hashes), aspect, sha256 or ""))


#: columns of a stored entry (:meth:`HashEntry.row`), besides the store's own (``added``, a tenant, ...)
ROW_COLUMNS = ("case_id", "photo", "hash_size", "aspect", "sha256", "hashes")


class HashStore(Protocol):
    """Where a :class:`ReuseIndex` keeps its entries (the CLI: SQLite file; the service: its database)."""

    def add(self, entries: Sequence[HashEntry]) -> None:
        """Store entries (a photo already stored for the same case is replaced)."""

    def remove_case(self, case_id: str) -> None:
        """Forget every photo of a case (it is being re-assessed or deleted)."""

    def entries(self) -> Iterable[HashEntry]:
        """Every stored entry."""


class MemoryHashStore:
    """A :class:`HashStore` in memory (tests, one-off runs)."""

    def __init__(self) -> None:
        self._d: dict[tuple[str, str], HashEntry] = {}

    def add(self, entries: Sequence[HashEntry]) -> None:
        for e in entries:
            self._d[(e.case_id, e.photo)] = e

    def remove_case(self, case_id: str) -> None:
        for k in [k for k in self._d if k[0] == case_id]:
            del self._d[k]

    def entries(self) -> Iterable[HashEntry]:
        return list(self._d.values())


class SQLiteHashStore:
    """A :class:`HashStore` in one SQLite file (table ``photo_hashes``), safe for several processes
    (SQLite's own locking; each call is one transaction).

    Args:
        path: the file (created with its table when missing).
    Raises:
        ValueError: naming the file when it cannot be opened or is not a carcheck index.
    """

    SCHEMA = ("CREATE TABLE IF NOT EXISTS photo_hashes (case_id TEXT NOT NULL, photo TEXT NOT NULL, "
              "hash_size INTEGER NOT NULL, aspect REAL NOT NULL, sha256 TEXT NOT NULL, "
              "hashes BLOB NOT NULL, added TEXT NOT NULL, PRIMARY KEY (case_id, photo))")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if self.path.parent and not self.path.parent.exists():
                raise ValueError(f"{self.path}: its folder does not exist")
            with self._connect() as c:
                c.execute(self.SCHEMA)
                cols = [r[1] for r in c.execute("PRAGMA table_info(photo_hashes)")]
            if "hashes" not in cols or "hash_size" not in cols:
                raise ValueError(f"{self.path}: has a photo_hashes table that is not a carcheck index")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a usable SQLite index ({e})") from None

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=30)
        return c

    def add(self, entries: Sequence[HashEntry]) -> None:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        rows = [{**e.row(), "added": now} for e in entries]
        cols = ", ".join((*ROW_COLUMNS, "added"))
        with self._connect() as c:
            c.executemany(f"INSERT OR REPLACE INTO photo_hashes ({cols}) VALUES "
                          f"({', '.join(':' + k for k in (*ROW_COLUMNS, 'added'))})", rows)

    def remove_case(self, case_id: str) -> None:
        with self._connect() as c:
            c.execute("DELETE FROM photo_hashes WHERE case_id = ?", (case_id,))

    def entries(self) -> Iterable[HashEntry]:
        with self._connect() as c:
            rows = c.execute("SELECT case_id, photo, aspect, sha256, hashes FROM photo_hashes WHERE hash_size = ? "
                             "ORDER BY rowid", (HASH_SIZE,)).fetchall()
        return [HashEntry.from_row(*r) for r in rows]


def _hamming(x: np.ndarray) -> np.ndarray:
    """Set bits over the last axis of a uint8 XOR array (the Hamming distance of packed hashes)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x).sum(-1, dtype=np.int64)
    return np.unpackbits(x, axis=-1).sum(-1, dtype=np.int64)


_N = len(WINDOWS)
# (query row, stored row kinds) pairs compared, with what a match means
_WHOLE, _MIRROR = 0, 1
_WIN = slice(2, 2 + _N)
_MWIN = slice(2 + _N, 2 + 2 * _N)


class ReuseIndex:
    """Finds photos of a case that match photos already indexed, and duplicates inside the case.

    Args:
        store: where the hashes live (default: in memory).
        max_phash / max_dhash: Hamming thresholds, both must hold.
    """

    def __init__(self, store: HashStore | None = None, max_phash: int = MAX_PHASH, max_dhash: int = MAX_DHASH) -> None:
        self.store = store if store is not None else MemoryHashStore()
        self.max_phash, self.max_dhash = max_phash, max_dhash
        self._cache: tuple[list[HashEntry], np.ndarray] | None = None

    def _matrix(self, entries: Sequence[HashEntry]) -> np.ndarray:
        if not entries:
            return np.zeros((0, 2 + 2 * _N, 2, HASH_SIZE * HASH_SIZE // 8), np.uint8)
        return np.stack([e.hashes.bits for e in entries])

    def _stored(self) -> tuple[list[HashEntry], np.ndarray]:
        if self._cache is None:
            entries = list(self.store.entries())
            self._cache = (entries, self._matrix(entries))
        return self._cache

    def _match(self, q: PhotoHashes, m: np.ndarray) -> list[tuple[int, int, str]]:
        """(stored index, pHash distance, how) of every stored photo matching ``q`` (best variant each)."""
        if len(m) == 0:
            return []
        qa = q.bits

        def dist(qrows: np.ndarray, srows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # qrows (k, 2, B), srows (n, j, 2, B) -> min over (k x j) of pHash distance where both hold; (n,)
            x = _hamming(qrows[None, :, None] ^ srows[:, None])  # (n, k, j, 2)
            ok = (x[..., 0] <= self.max_phash) & (x[..., 1] <= self.max_dhash)
            d = np.where(ok, x[..., 0], 1 << 30).reshape(len(srows), -1)
            return d.min(1), ok.reshape(len(srows), -1).any(1)

        whole = m[:, _WHOLE:_WHOLE + 1]
        checks = [  # (query rows, stored rows, how)
            (qa[_WHOLE:_WHOLE + 1], whole, "same photo (resized or re-encoded)"),
            (qa[_MIRROR:_MIRROR + 1], whole, "mirrored copy"),
            (qa[_WHOLE:_WHOLE + 1], m[:, _WIN], "crop of the other photo"),
            (qa[_WIN], whole, "the other photo is a crop of it"),
            (qa[_MIRROR:_MIRROR + 1], m[:, _WIN], "mirrored crop of the other photo"),
            (qa[_MWIN], whole, "the other photo is a mirrored crop of it"),
        ]
        best: dict[int, tuple[int, str]] = {}
        for qrows, srows, how in checks:
            d, ok = dist(qrows, srows)
            for i in np.flatnonzero(ok):
                if int(i) not in best or d[i] < best[int(i)][0]:
                    best[int(i)] = (int(d[i]), how)
        return [(i, d, how) for i, (d, how) in sorted(best.items())]

    def check_case(self, case_id: str, photos: Sequence[tuple[str, PhotoHashes]]) -> list[ReuseMatch]:
        """Matches of a case's photos: against every indexed photo of OTHER cases, and among themselves.

        Args:
            case_id: the case (its own earlier entries in the index are ignored: a re-assessment).
            photos: ``(display name, hashes)`` of its photos, in order.
        Returns:
            :class:`~carcheck.schema.ReuseMatch` list: for other cases one per (photo, matched
            photo); inside the case one per later photo matching an earlier one.
        """
        entries, m = self._stored()
        keep = [i for i, e in enumerate(entries) if e.case_id != case_id]
        out: list[ReuseMatch] = []
        for name, h in photos:
            for i, d, how in self._match(h, m[keep]):
                e = entries[keep[i]]
                exact = bool(h.sha256) and h.sha256 == e.hashes.sha256
                out.append(ReuseMatch(photo=name, case_id=e.case_id, matched_photo=e.photo, distance=d,
                                      how="identical file" if exact else how, same_case=False))
        own = self._matrix([HashEntry(case_id, n, h) for n, h in photos])
        for j, (name, h) in enumerate(photos):
            for i, d, how in self._match(h, own[:j]):
                exact = bool(h.sha256) and h.sha256 == photos[i][1].sha256
                out.append(ReuseMatch(photo=name, case_id=case_id, matched_photo=photos[i][0], distance=d,
                                      how="identical file" if exact else how, same_case=True))
        return out

    def add_case(self, case_id: str, photos: Sequence[tuple[str, PhotoHashes]]) -> None:
        """Index a case's photos (replacing what the index held for that case)."""
        self.store.remove_case(case_id)
        self.store.add([HashEntry(case_id, n, h) for n, h in photos])
        self._cache = None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes ("" when it cannot be read)."""
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


def reuse_check(index: ReuseIndex, case_id: str, photos: Sequence[tuple[str, str | Path | None, np.ndarray]],
                add: bool = True, max_days: float = 2.0) -> tuple[list[ReuseMatch], dict[str, list[str]]]:
    """The whole reused-photo step of one case: hash its photos, match them against the index (other cases)
    and each other, apply the EXIF rules, and index the case.

    Args:
        index: the :class:`ReuseIndex` (in memory for duplicates inside the case only).
        case_id: the case's id (its own earlier entries are replaced, never matched).
        photos: ``(display name, file or None, (H, W, 3) uint8 RGB pixels)`` of the case's assessed photos;
            the file gives the exact-copy digest and the EXIF data.
        add: index the case afterwards.
        max_days: allowed span of capture dates (:func:`~.exif.exif_reasons`).
    Returns:
        (the matches, photo -> review reasons from :func:`~.review.claims_reasons`).
    """
    from .review import claims_reasons

    hashed = [(name, photo_hashes(img, file_sha256(f) if f is not None else "")) for name, f, img in photos]
    matches = index.check_case(case_id, hashed)
    if add:
        index.add_case(case_id, hashed)
    metas = [read_photo_meta(f, name) if f is not None else PhotoMeta(name) for name, f, _ in photos]
    return matches, claims_reasons(matches, exif_reasons(metas, max_days))
