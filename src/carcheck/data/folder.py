"""Folder-per-class image classification datasets and pairs-CSV verification datasets."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from .images import display_name, is_image_path, load_image

__all__ = ["FolderFormatError", "ImageFolderDataset", "PairsDataset", "find_class_folders", "find_pairs_csvs",
           "read_csv_rows"]


class FolderFormatError(ValueError):
    """A class-folder tree or a pairs CSV is malformed; the message names the path."""


def read_csv_rows(path: str | Path, required: Sequence[str] = ()) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV file with a header row, strictly.

    Args:
        path: the CSV file (UTF-8, an optional BOM).
        required: columns that must be in the header.
    Returns:
        ``(columns, [(line number, {column: value})])``; blank lines are skipped, column names and
        values are kept as written (column names stripped).
    Raises:
        FolderFormatError: naming the file and the line: unreadable, not UTF-8, an empty file, a
            missing or repeated column, a row with fewer or more fields than the header, an
            unterminated quote, a field longer than ``csv.field_size_limit()`` characters
            (131,072 by default), a NUL byte.
    """
    where = display_name(path)
    start = 1
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if header is None:
                raise FolderFormatError(f"{where}: empty file (no header row)")
            cols = [h.strip() for h in header]
            missing = [c for c in required if c not in cols]
            if missing:
                raise FolderFormatError(f"{where}:1: the header lacks the column(s) {', '.join(missing)} "
                                        f"(found {', '.join(map(repr, cols))})")
            repeated = sorted({c for c in cols if cols.count(c) > 1})
            if repeated:
                raise FolderFormatError(f"{where}:1: repeated column(s) {', '.join(repeated)}")
            rows = []
            start = reader.line_num + 1
            for fields in reader:
                if not any(x.strip() for x in fields):
                    start = reader.line_num + 1
                    continue
                if len(fields) != len(cols):
                    raise FolderFormatError(f"{where}:{start}: {len(fields)} field(s), the header has {len(cols)} "
                                            f"({', '.join(cols)})")
                if any("\0" in x for x in fields):
                    raise FolderFormatError(f"{where}:{start}: a field holds a NUL byte")
                rows.append((start, dict(zip(cols, fields))))
                start = reader.line_num + 1
    except csv.Error as e:
        hint = "; an unterminated quote?" if "end of data" in str(e) else ""
        raise FolderFormatError(f"{where}:{start}: malformed CSV from this line on ({e}{hint})") from None
    except UnicodeDecodeError as e:
        raise FolderFormatError(f"{where}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise FolderFormatError(f"{where}: cannot be read ({e.strerror or e})") from None
    return cols, rows


def find_class_folders(root: Path, min_classes: int = 2) -> list[Path]:
    """Folders under ``root`` (``root`` included) whose sub-folders all hold images
    directly and number at least ``min_classes``: folder-per-class roots."""
    out = []
    for d in [Path(root), *sorted(p for p in Path(root).rglob("*") if p.is_dir())]:
        subs = [s for s in sorted(d.iterdir()) if s.is_dir()]
        if len(subs) < min_classes:
            continue
        if all(any(is_image_path(f) for f in s.iterdir()) for s in subs):
            if not any(o in d.parents for o in out):
                out.append(d)
    return out


class ImageFolderDataset(Dataset):
    """Folder-per-class dataset: ``root/<class>/<image>``.

    Args:
        root: the folder whose sub-folders are classes (sorted names = label order).
        transform: callable on the ``uint8`` ``(3, H, W)`` image tensor.
        classes: fix the class order (e.g. a shipped model's); default: sorted folder names.

    Items: ``(image tensor, label int)``. ``samples`` lists ``(path, label)``.

    Raises:
        FolderFormatError: if ``root`` has no class folder or no image.
        ImageLoadError: from items, naming the file.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None,
                 classes: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FolderFormatError(f"{self.root}: not a folder")
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.classes = list(classes) if classes is not None else found
        if not self.classes:
            raise FolderFormatError(f"{self.root}: no class sub-folders")
        self.samples: list[tuple[Path, int]] = []
        for label, c in enumerate(self.classes):
            d = self.root / c
            if d.is_dir():
                self.samples += [(p, label) for p in sorted(d.rglob("*")) if is_image_path(p)]
        if not self.samples:
            raise FolderFormatError(f"{self.root}: no images in the class folders {self.classes}")
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = torch.from_numpy(load_image(path)).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def find_pairs_csvs(root: Path) -> list[Path]:
    """CSV files under ``root`` whose header has two file columns and a 0/1 label column."""
    out = []
    for p in sorted(Path(root).rglob("*.csv")):
        try:
            with open(p, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if _pair_columns(header) is not None:
            out.append(p)
    return out


def _pair_columns(header: Sequence[str]) -> tuple[str, str, str] | None:
    cols = [h.strip() for h in header]
    for a, b in (("file_a", "file_b"), ("image_a", "image_b"), ("img1", "img2")):
        if a in cols and b in cols:
            label = next((c for c in ("same_vehicle", "same", "label", "is_same") if c in cols), None)
            if label:
                return a, b, label
    return None


class PairsDataset(Dataset):
    """Verification pairs from a CSV: ``file_a, file_b, same_vehicle`` (0/1).

    File names are relative to ``image_root`` (default: ``<csv dir>/images``, else the CSV's folder).
    Items: ``(image_a, image_b, same)`` with ``uint8`` ``(3, H, W)`` tensors and ``same`` an int.

    Raises:
        FolderFormatError: if the CSV lacks the pair columns or a label is not 0/1.
    """

    def __init__(self, csv_path: str | Path, image_root: str | Path | None = None,
                 transform: Callable | None = None) -> None:
        self.csv_path = Path(csv_path)
        header, table = read_csv_rows(self.csv_path)
        cols = _pair_columns(header)
        if cols is None:
            raise FolderFormatError(f"{display_name(self.csv_path)}: needs columns file_a, file_b and same_vehicle (0/1)")
        a, b, lab = cols
        if image_root is None:
            image_root = self.csv_path.parent / "images"
            if not image_root.is_dir():
                image_root = self.csv_path.parent
        self.image_root = Path(image_root)
        self.pairs: list[tuple[Path, Path, int]] = []
        for i, r in table:
            if r[lab].strip() not in ("0", "1"):
                raise FolderFormatError(f"{display_name(self.csv_path)}:{i}: label {r[lab]!r:.60} is not 0 or 1")
            if not r[a].strip() or not r[b].strip():
                raise FolderFormatError(f"{display_name(self.csv_path)}:{i}: an empty file name")
            self.pairs.append((self.image_root / r[a], self.image_root / r[b], int(r[lab])))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        pa, pb, same = self.pairs[index]
        ims = [torch.from_numpy(load_image(p)).permute(2, 0, 1).contiguous() for p in (pa, pb)]
        if self.transform is not None:
            ims = [self.transform(x) for x in ims]
        return ims[0], ims[1], same
