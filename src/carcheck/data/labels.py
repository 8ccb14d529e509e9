"""Image-level label tables: one row per photo (file, label, source, split, group).

The classifier and embedding trainers read either a folder-per-class tree or a CSV with the
columns ``file,label`` and optionally ``source`` (where the photo comes from, for per-source
accuracy), ``split`` (``train``/``val``/``test``) and ``group`` (e.g. vehicle identity: rows of
one group never straddle splits). ``file`` is relative to the CSV's folder unless absolute.

Splits are seeded and stratified (:func:`assign_splits`) and written into the CSV, so a held-out
test split is fixed once and every later run and benchmark reads the same one.
"""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from .folder import FolderFormatError, read_csv_rows
from .images import display_name, is_image_path

__all__ = ["LabelRow", "read_labels", "read_label_csv", "write_label_csv", "rows_from_class_folders",
           "assign_splits", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LabelRow:
    """One labelled photo.

    Attributes:
        path: the image file.
        label: class name.
        source: data source name (per-source metrics; "" if unknown).
        split: ``train``, ``val``, ``test`` or None (not assigned yet).
        group: rows sharing a non-empty group stay in one split (e.g. a vehicle identity).
    """

    path: Path
    label: str
    source: str = ""
    split: str | None = None
    group: str = ""


def rows_from_class_folders(root: str | Path, source: str | None = None) -> list[LabelRow]:
    """``root/<class>/<image>`` -> rows (labels = folder names, sorted; images found recursively).

    Raises:
        FolderFormatError: if ``root`` is not a folder or holds no images in class folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise FolderFormatError(f"{root}: not a folder")
    rows = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        rows += [LabelRow(p, d.name, source if source is not None else root.name)
                 for p in sorted(d.rglob("*")) if p.is_file() and is_image_path(p)]
    if not rows:
        raise FolderFormatError(f"{root}: no images in class sub-folders")
    return rows


def read_label_csv(path: str | Path) -> list[LabelRow]:
    """Read a label CSV (see the module doc).

    Raises:
        FolderFormatError: naming the CSV and the line: missing ``file``/``label`` columns, an
            empty table, a bad split name, an empty file name or label, and every malformed-CSV
            case of :func:`~carcheck.data.folder.read_csv_rows` (short or long rows, unterminated
            quotes, over-long fields, NUL bytes, not UTF-8).
    """
    path = Path(path)
    where = display_name(path)
    _, table = read_csv_rows(path, required=("file", "label"))
    rows = []
    for i, r in table:
        split = (r.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            raise FolderFormatError(f"{where}:{i}: split {split!r:.40} is not one of {SPLITS}")
        if not r["file"].strip():
            raise FolderFormatError(f"{where}:{i}: empty file name")
        if not r["label"].strip():
            raise FolderFormatError(f"{where}:{i}: empty label")
        p = Path(r["file"])
        rows.append(LabelRow(p if p.is_absolute() else path.parent / p, r["label"].strip(),
                             (r.get("source") or "").strip(), split, (r.get("group") or "").strip()))
    if not rows:
        raise FolderFormatError(f"{where}: no rows")
    return rows


def read_labels(data: str | Path) -> list[LabelRow]:
    """A CSV file or a folder-per-class tree -> rows.

    Raises:
        FileNotFoundError: if ``data`` does not exist.
        FolderFormatError: as :func:`read_label_csv` / :func:`rows_from_class_folders`.
    """
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such label CSV or folder")
    return read_label_csv(data) if data.is_file() else rows_from_class_folders(data)


def write_label_csv(rows: Iterable[LabelRow], path: str | Path) -> Path:
    """Write rows as a label CSV; files are stored relative to the CSV's folder when possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "source", "split", "group"])
        for r in rows:
            p = r.path.resolve()
            try:
                rel = Path(os.path.relpath(p, base))
            except ValueError:
                rel = p
            w.writerow([rel.as_posix(), r.label, r.source, r.split or "", r.group])
    return path


def assign_splits(rows: Sequence[LabelRow], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0,
                  strata: Sequence[str] = ("label", "source")) -> list[LabelRow]:
    """Seeded stratified split of the rows that have none yet (rows with a split keep it).

    Within each stratum (the tuple of the ``strata`` attributes) units are shuffled with
    ``random.Random(seed)`` after sorting by path, so the split depends only on the file list and
    the seed. A unit is one row, or all rows sharing a non-empty ``group`` (a group's stratum is its
    first row's). Each stratum with >= 3 units gets at least one unit in val and in test, unless
    that split's fraction is 0 (then it gets none).

    This is the one seeded splitter: the recipes, the image-level trainers and the segmentation
    trainer's validation hold-out (one stratum, ``strata=()``, no test split) all call it.

    Args:
        rows: the rows; those with a ``split`` keep it.
        fractions: train, val, test fractions (sum 1; val or test may be 0).
        seed: seed of the shuffle.
        strata: ``LabelRow`` attribute names whose values form the strata (``()``: one stratum).
    Returns:
        new rows, same order, every ``split`` set.
    Raises:
        ValueError: if the fractions do not sum to 1.
    """
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions {fractions} must sum to 1")
    units: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r.split is None:
            units[r.group or f"\0{r.path}"].append(i)
    by_stratum: dict[tuple, list[str]] = defaultdict(list)
    for key, idx in units.items():
        first = rows[idx[0]]
        by_stratum[tuple(getattr(first, s) for s in strata)].append(key)
    out = list(rows)
    rng = random.Random(seed)
    for stratum in sorted(by_stratum):
        keys = sorted(by_stratum[stratum], key=lambda k: str(rows[units[k][0]].path))
        rng.shuffle(keys)
        n = len(keys)
        n_test = max(1, round(n * fractions[2])) if n >= 3 and fractions[2] > 0 else 0
        n_val = max(1, round(n * fractions[1])) if n >= 3 and fractions[1] > 0 else 0
        for j, k in enumerate(keys):
            split = "test" if j < n_test else "val" if j < n_test + n_val else "train"
            for i in units[k]:
                out[i] = replace(out[i], split=split)
    return out
