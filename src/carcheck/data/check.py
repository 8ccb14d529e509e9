"""Dataset discovery and validation (``carcheck dataset check``); the statistics (``carcheck dataset stats``)
are :mod:`.stats`.

A folder is scanned for the formats carcheck reads: COCO instance JSON files, YOLO
``data.yaml`` configs, folder-per-class trees and verification pairs CSVs. Each found
source contributes one or more *splits* (sets of image files).

Errors (non-zero exit): missing or unreadable images, annotations pointing to unknown
images or categories, degenerate polygons, annotation/file size mismatches, malformed
YOLO labels, pairs naming missing files, and near-duplicate images across splits of one
dataset (64-bit dHash and 64-bit pHash both within a Hamming threshold, mirrored copies
included, as CarDD de-duplicated across splits). Warnings: images on disk that no annotation file lists,
stale YOLO split paths, near-duplicates inside one split, boxes off their polygons.

Size buckets follow CarDD (section III-C): small < 128² px, medium < 256² px, large >= 256² px
of instance (mask) area.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import imagehash
import numpy as np
from PIL import Image

from .coco import CocoInstance, CocoSource, find_coco_files

from .coco_schema import CocoFormatError
from .folder import FolderFormatError, PairsDataset, find_class_folders, find_pairs_csvs
from .images import ImageLoadError, decode_image, display_name, is_image_path
from .yolo import YoloFormatError, YoloSource, find_yolo_configs, label_path_for

__all__ = ["Problem", "CheckReport", "discover", "check_dataset", "SMALL_AREA", "MEDIUM_AREA", "size_bucket"]

SMALL_AREA = 128 ** 2  #: px²; CarDD "small" is below this
MEDIUM_AREA = 256 ** 2  #: px²; CarDD "medium" is below this, "large" at or above

Track = Callable[..., Iterable]

#: Photos are decoded for the check at up to this many pixels (hashes need little; sizes are
#: compared with the file's own header, so a reduced decode changes nothing).
_CHECK_PIXELS = 16_000_000


def _no_track(it, **_):
    return it


def size_bucket(area_px: float) -> str:
    """CarDD size class of an instance area in px²: ``small`` / ``medium`` / ``large``."""
    return "small" if area_px < SMALL_AREA else "medium" if area_px < MEDIUM_AREA else "large"


@dataclass
class Problem:
    """One finding of the check. ``severity`` is ``error`` or ``warning``; ``code`` a stable slug."""

    severity: str
    code: str
    path: str
    message: str

    def __post_init__(self) -> None:  # file names that are not UTF-8: printable, JSON-safe text
        self.path, self.message = display_name(str(self.path)), display_name(str(self.message))

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.path}: {self.message}"


@dataclass
class Split:
    """Images of one split of one source. ``dataset`` groups the splits compared for duplicates."""

    dataset: str
    name: str
    kind: str
    source: str
    images: list[Path] = field(default_factory=list)


@dataclass
class CheckReport:
    root: str
    splits: list[Split]
    problems: list[Problem]
    images_checked: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        counts = Counter(p.code for p in self.problems)
        return {
            "root": self.root, "ok": self.ok, "images_checked": self.images_checked,
            "splits": [{"dataset": s.dataset, "split": s.name, "format": s.kind, "source": s.source,
                        "images": len(s.images)} for s in self.splits],
            "errors": len(self.errors), "warnings": len(self.problems) - len(self.errors),
            "problem_counts": dict(counts),
            "problems": [p.__dict__ for p in self.problems],
        }


def _coco_dataset_name(json_path: Path, root: Path) -> str:
    # <dataset>/annotations/instances_x.json, <dataset>/<split>/annotations.json, ...
    d = json_path.parent.parent
    try:
        return str(d.relative_to(root)) or "."
    except ValueError:
        return str(d)


def discover(root: str | Path) -> tuple[list[tuple[str, object]], list[Problem]]:
    """Find readable sources under ``root``.

    Returns:
        ``([(kind, source)], problems)`` with kind in ``coco``, ``yolo``, ``folder``, ``pairs``;
        ``source`` a :class:`CocoSource`, :class:`YoloSource`, a class-folder ``Path`` or a pairs CSV ``Path``.
        Unparseable annotation files come back as error problems.

    Raises:
        FileNotFoundError: if ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    found: list[tuple[str, object]] = []
    problems: list[Problem] = []
    image_roots: set[Path] = set()
    for jp in find_coco_files(root):
        try:
            src = CocoSource(jp)
        except CocoFormatError as e:
            if e.problems:  # schema problems, each with its JSON path
                problems.extend(Problem("error", "schema", display_name(jp), f"{loc}: {msg}") for loc, msg in e.problems)
            else:
                problems.append(Problem("error", "bad_annotation_file", display_name(jp), str(e)))
            continue
        found.append(("coco", src))
        image_roots.add(src.image_root.resolve())
    for yp in find_yolo_configs(root):
        try:
            ys = YoloSource(yp)
        except YoloFormatError as e:
            problems.append(Problem("error", "bad_annotation_file", display_name(yp), str(e)))
            continue
        found.append(("yolo", ys))
        image_roots.add((yp.parent / "images").resolve())
        for paths in ys.splits.values():
            image_roots.update(p.parent.resolve() for p in paths)
    for d in find_class_folders(root):
        subs = {s.resolve() for s in d.iterdir() if s.is_dir()}
        if d.resolve() in image_roots or subs & image_roots or any(r in d.resolve().parents for r in image_roots):
            continue  # the image folders of an annotated set, not classes
        found.append(("folder", d))
    for cp in find_pairs_csvs(root):
        found.append(("pairs", cp))
    return found, problems


def _polygon_problems(inst: CocoInstance, w: int, h: int, where: str) -> list[Problem]:
    """Degenerate geometry of one annotation. A polygon with < 3 points or < 1 px² area is an
    error when it is the annotation's only usable polygon, and a warning (a stray fragment)
    when the same annotation has other, valid polygons."""
    seg = inst.segmentation
    out: list[Problem] = []
    if isinstance(seg, list):
        bad, good = [], 0
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                n = len(poly) if isinstance(poly, list) else "?"
                bad.append(f"polygon {k} has {n} coordinates (needs an even number >= 6)")
                continue
            xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
            area = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
            if area < 1.0:
                bad.append(f"polygon {k} encloses {area:.2f} px² (< 1 px²)")
            else:
                good += 1
            if (xy[:, 0] < -1).any() or (xy[:, 1] < -1).any() or (xy[:, 0] > w + 1).any() or (xy[:, 1] > h + 1).any():
                out.append(Problem("warning", "polygon_outside_image", where,
                                   f"annotation {inst.ann_id}: polygon {k} extends beyond {w}x{h}"))
        if not seg:
            bad.append("empty segmentation")
        for b in bad:
            if good:
                out.append(Problem("warning", "degenerate_polygon_fragment", where,
                                   f"annotation {inst.ann_id}: {b}; its other {good} polygon(s) are valid"))
            else:
                out.append(Problem("error", "degenerate_polygon", where, f"annotation {inst.ann_id}: {b}"))
    elif isinstance(seg, dict):
        try:
            inst.to_rle(h, w)
        except CocoFormatError as e:
            out.append(Problem("error", "degenerate_polygon", where, str(e)))
    else:
        out.append(Problem("error", "degenerate_polygon", where, f"annotation {inst.ann_id}: no segmentation"))
    return out


def _check_image(path: Path, problems: list[Problem], declared: tuple[int, int] | None = None):
    """Decode fully; record unreadable / size mismatch. Returns the RGB array or None."""
    try:
        decoded = decode_image(path, max_decoded_pixels=_CHECK_PIXELS)
    except ImageLoadError as e:
        code = "missing_image" if e.reason == "file not found" else "unreadable_image"
        problems.append(Problem("error", code, display_name(path), e.reason))
        return None
    arr = decoded.array
    if declared and all(declared):
        w, h = decoded.width, decoded.height
        if (w, h) != declared:
            problems.append(Problem("error", "size_mismatch", str(path),
                                    f"annotation says {declared[0]}x{declared[1]} px, file is {w}x{h} px"))
    return arr


def _dhash_pair(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, mirrored hashes)``: each the 128 bits of dHash + pHash (64 each) as uint8."""
    im = Image.fromarray(arr)
    fl = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    def bits(x):
        return np.concatenate([imagehash.dhash(x).hash.flatten(), imagehash.phash(x).hash.flatten()]).astype(np.uint8)
    return bits(im), bits(fl)


def _check_coco(src: CocoSource, root: Path, problems: list[Problem], hashes: dict, track: Track) -> Split:
    where = str(src.json_path)
    split = Split(_coco_dataset_name(src.json_path, root), src.split, "coco", where)
    image_ids = {im.id for im in src.images}
    for ann in src.raw["annotations"]:
        if ann.get("image_id") not in image_ids:
            problems.append(Problem("error", "unknown_image", where,
                                    f"annotation {ann.get('id')} points to image id {ann.get('image_id')} not in 'images'"))
        if ann.get("category_id") not in src.categories:
            problems.append(Problem("error", "unknown_category", where,
                                    f"annotation {ann.get('id')} has category id {ann.get('category_id')} not in 'categories'"))
    for im in track(src.images, description=f"checking {src.json_path.name} ({src.split})"):
        split.images.append(im.path)
        arr = _check_image(im.path, problems, (im.width, im.height))
        for inst in src.instances(im.id):
            problems.extend(_polygon_problems(inst, im.width, im.height, f"{where} ({im.path.name})"))
        if arr is not None:
            hashes.setdefault(im.path.resolve(), _dhash_pair(arr))
    listed = {im.path.resolve() for im in src.images}
    folder = src.image_root
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if is_image_path(p) and p.resolve() not in listed and p.parent.resolve() == folder.resolve():
                problems.append(Problem("warning", "unlisted_image", str(p), f"not listed in {where}"))
    return split


def _check_yolo(src: YoloSource, root: Path, problems: list[Problem], hashes: dict, track: Track) -> list[Split]:
    problems.extend(Problem("warning", "yolo_split_path", str(src.yaml_path), w) for w in src.warnings)
    out = []
    ds = str(src.yaml_path.parent.relative_to(root)) if src.yaml_path.parent != root else "."
    for name, paths in src.splits.items():
        split = Split(ds, name, "yolo", str(src.yaml_path))
        for p in track(paths, description=f"checking YOLO {name}"):
            split.images.append(p)
            arr = _check_image(p, problems)
            try:
                src.objects(p)
            except YoloFormatError as e:
                problems.append(Problem("error", "bad_label", str(label_path_for(p)), str(e)))
            if arr is not None:
                hashes.setdefault(p.resolve(), _dhash_pair(arr))
        out.append(split)
    return out


def _check_folder(d: Path, root: Path, problems: list[Problem], hashes: dict, track: Track) -> Split:
    split = Split(str(d.relative_to(root)) if d != root else ".", "all", "folder", str(d))
    files = [p for c in sorted(x for x in d.iterdir() if x.is_dir()) for p in sorted(c.rglob("*")) if p.is_file()]
    for p in track(files, description=f"checking {d.name}"):
        if not is_image_path(p):
            continue
        split.images.append(p)
        arr = _check_image(p, problems)
        if arr is not None:
            hashes.setdefault(p.resolve(), _dhash_pair(arr))
    return split


def _check_pairs(cp: Path, root: Path, problems: list[Problem], track: Track) -> Split | None:
    """Every file a pairs CSV names must exist and decode. Pairs are not searched for
    near-duplicates (two photos of one vehicle may legitimately look alike)."""
    try:
        ds = PairsDataset(cp)
    except FolderFormatError as e:
        problems.append(Problem("error", "bad_pairs_file", str(cp), str(e)))
        return None
    split = Split(str(cp.parent.relative_to(root)) if cp.parent != root else ".", cp.stem, "pairs", str(cp))
    files = sorted({p for a, b, _ in ds.pairs for p in (a, b)})
    for p in track(files, description=f"checking {cp.name}"):
        split.images.append(p)
        _check_image(p, problems)
    return split


def _near_duplicates(splits: list[Split], hashes: dict, threshold: int, problems: list[Problem]) -> None:
    by_dataset: dict[str, list[Split]] = defaultdict(list)
    for s in splits:
        if s.kind != "pairs":
            by_dataset[s.dataset].append(s)
    for ds, group in by_dataset.items():
        owner: dict[Path, str] = {}
        for s in group:
            for p in s.images:
                owner.setdefault(p.resolve(), s.name)
        paths = [p for p in owner if p in hashes]
        if len(paths) < 2:
            continue
        bits = np.stack([hashes[p][0] for p in paths])
        mirrored = np.stack([hashes[p][1] for p in paths])
        names = np.array([owner[p] for p in paths])
        seen_within = 0
        for i in range(len(paths) - 1):
            # a pair counts when BOTH its dHash and its pHash distances are within the threshold
            # (dHash alone matches unrelated low-texture close-ups of panels)
            dd = np.maximum((bits[i + 1:, :64] != bits[i, :64]).sum(1), (bits[i + 1:, 64:] != bits[i, 64:]).sum(1))
            dm = np.maximum((mirrored[i + 1:, :64] != bits[i, :64]).sum(1), (mirrored[i + 1:, 64:] != bits[i, 64:]).sum(1))
            d = np.minimum(dd, dm)
            for j in np.nonzero(d <= threshold)[0]:
                k = i + 1 + j
                if names[i] != names[k]:
                    problems.append(Problem("error", "near_duplicate_across_splits", str(paths[i]),
                                            f"hash distance {int(d[j])} to {paths[k]} ({names[i]} vs {names[k]}, dataset {ds})"))
                elif seen_within < 50:
                    seen_within += 1
                    problems.append(Problem("warning", "near_duplicate_within_split", str(paths[i]),
                                            f"hash distance {int(d[j])} to {paths[k]}"))


def check_dataset(root: str | Path, hash_threshold: int = 10, duplicates: bool = True,
                  track: Track = _no_track) -> CheckReport:
    """Validate every dataset found under ``root`` (see the module docstring for the rules).

    Args:
        root: a dataset folder, or a folder of datasets.
        hash_threshold: max Hamming distance (of 64 bits) for a near-duplicate.
        duplicates: run the near-duplicate search.
        track: progress wrapper ``track(iterable, description=...)`` (e.g. ``rich.progress.track``).

    Raises:
        FileNotFoundError: if ``root`` does not exist.
    """
    root = Path(root)
    sources, problems = discover(root)
    if not sources and not problems:
        problems.append(Problem("error", "no_dataset", str(root),
                                "no COCO JSON, YOLO data.yaml, class folders or pairs CSV found"))
    splits: list[Split] = []
    hashes: dict[Path, tuple] = {}
    for kind, src in sources:
        if kind == "coco":
            splits.append(_check_coco(src, root, problems, hashes, track))
        elif kind == "yolo":
            splits.extend(_check_yolo(src, root, problems, hashes, track))
        elif kind == "folder":
            splits.append(_check_folder(src, root, problems, hashes, track))
        elif kind == "pairs":
            sp = _check_pairs(src, root, problems, track)
            if sp is not None:
                splits.append(sp)
    if duplicates:
        _near_duplicates(splits, hashes, hash_threshold, problems)
    n = len({p.resolve() for s in splits for p in s.images})
    return CheckReport(str(root), splits, problems, n)
