"""COCO instance-segmentation files: reading them (image paths resolved, pycocotools' index,
per-instance masks) and writing the one COCO file carcheck makes (hard negatives).

Polygons (single and multi-polygon), uncompressed and compressed RLE are decoded with
pycocotools. A file is validated against :mod:`carcheck.data.coco_schema` when read. Turning
instances into semantic masks of a taxonomy, and the torch dataset, is
:mod:`carcheck.data.coco_dataset`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .coco_schema import CocoFormatError, coco_schema_problems
from .images import display_name
from .taxonomy import get_taxonomy

__all__ = ["CocoImage", "CocoInstance", "CocoSource", "find_coco_files", "is_coco_file", "negatives_coco"]


@dataclass(frozen=True)
class CocoImage:
    """One image entry: COCO id, resolved file path, declared width/height in pixels."""

    id: int
    path: Path
    width: int
    height: int


@dataclass
class CocoInstance:
    """One annotation object.

    Attributes:
        ann_id: COCO annotation id.
        category: COCO category name (source taxonomy).
        segmentation: raw COCO segmentation (polygon list or RLE dict).
        bbox: ``(x, y, w, h)`` in pixels as stored.
        iscrowd: COCO crowd flag.
    """

    ann_id: int
    category: str
    segmentation: Any
    bbox: tuple[float, float, float, float]
    iscrowd: bool = False

    def to_rle(self, height: int, width: int) -> dict:
        """Compressed RLE of this instance on an image of ``height x width`` pixels.

        Raises:
            CocoFormatError: if the segmentation is empty or malformed.
        """
        seg = self.segmentation
        try:
            if isinstance(seg, list):
                polys = [p for p in seg if len(p) >= 6]
                if not polys:
                    raise CocoFormatError(f"annotation {self.ann_id}: no polygon with >= 3 points")
                rles = mask_utils.frPyObjects(polys, height, width)
                return mask_utils.merge(rles)
            if isinstance(seg, dict) and "counts" in seg:
                if isinstance(seg["counts"], list):
                    return mask_utils.frPyObjects(seg, height, width)
                return seg
        except CocoFormatError:
            raise
        except Exception as e:  # pycocotools raises bare Exceptions / TypeErrors
            raise CocoFormatError(f"annotation {self.ann_id}: bad segmentation ({e})") from None
        raise CocoFormatError(f"annotation {self.ann_id}: segmentation is neither polygons nor RLE")

    def to_mask(self, height: int, width: int) -> np.ndarray:
        """Binary mask, shape ``(height, width)``, dtype ``bool``."""
        return mask_utils.decode(self.to_rle(height, width)).astype(bool)


def _load_json(path: Path) -> dict:
    """Parse and validate a COCO instances file.

    Raises:
        CocoFormatError: naming the file: unreadable, not UTF-8, not JSON, nested too deeply,
            not COCO instances, or schema problems (listed in ``problems`` with JSON paths).
    """
    where = display_name(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise CocoFormatError(f"{where}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise CocoFormatError(f"{where}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise CocoFormatError(f"{where}: JSON nested too deeply to read") from None
    except MemoryError:
        raise CocoFormatError(f"{where}: too large to read into memory") from None
    except (OSError, ValueError) as e:
        raise CocoFormatError(f"{where}: not readable JSON ({display_name(str(e))})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise CocoFormatError(f"{where}: not a COCO instances file (needs images, annotations, categories)")
    problems = coco_schema_problems(data)
    if problems:
        raise CocoFormatError(f"{where}: {len(problems)} schema problem(s), first: {problems[0][0]}: {problems[0][1]}",
                              problems)
    return data


def is_coco_file(path: Path) -> bool:
    """Cheap test: a ``.json`` file whose top level has ``images`` and ``annotations``."""
    if path.suffix.lower() != ".json":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    # a UTF-16/32 file (BOM) is a candidate too, so that the check says it is not UTF-8
    return b'"images"' in head or b'"annotations"' in head or head.startswith((b"\xff\xfe", b"\xfe\xff"))


def find_coco_files(root: Path) -> list[Path]:
    """All COCO instance JSON files under ``root``, sorted."""
    return sorted(p for p in Path(root).rglob("*.json") if is_coco_file(p))


def _coco_index(data: dict, path: Path):
    """pycocotools' :class:`~pycocotools.coco.COCO` index of an already-loaded COCO dict
    (``COCO()``, ``dataset = data``, ``createIndex()`` with its progress prints swallowed;
    ``COCO(path)`` would print and read the file a second time).

    Raises:
        CocoFormatError: an entry of ``images`` / ``categories`` / ``annotations`` without its ``id``
            (an annotation without ``image_id`` / ``category_id``), or one that is not an object.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except KeyError as e:
        raise CocoFormatError(f"{path}: an entry of images, categories or annotations has no {e} field") from None
    except TypeError as e:
        raise CocoFormatError(f"{path}: an entry of images, categories or annotations is malformed ({e})") from None
    return coco


class CocoSource:
    """A parsed COCO annotation file with image paths resolved, indexed by pycocotools' ``COCO``
    (:attr:`coco`; :attr:`categories` and :attr:`annotations_by_image` are views of it).

    Image files are looked up, in order, at: the entry's ``path`` field and its
    ``file_name`` relative to the JSON's folder, ``<json dir>/JPEGImages``,
    ``<json dir>/images``, and ``<json dir>/../images/<split>`` where ``split`` comes
    from a file named ``instances_<split>.json`` (Roboflow / COCO layout). The first
    root that holds the first images wins for the whole file.

    Args:
        json_path: the annotation file.
        image_root: force the folder image ``file_name`` values are relative to.

    Raises:
        CocoFormatError: if the file is not COCO instances JSON.
    """

    def __init__(self, json_path: str | Path, image_root: str | Path | None = None) -> None:
        self.json_path = Path(json_path)
        self.raw = _load_json(self.json_path)
        #: pycocotools' own index of the file (images, categories, annotations per image / category)
        self.coco = _coco_index(self.raw, self.json_path)
        self.categories: dict[int, str] = {int(k): str(c["name"]) for k, c in self.coco.cats.items()}
        self.image_root = Path(image_root) if image_root is not None else self._guess_image_root()
        self.images: list[CocoImage] = [
            CocoImage(int(im["id"]), self._image_path(im), int(im.get("width", 0)), int(im.get("height", 0)))
            for im in self.raw["images"]
        ]
        #: image id -> its annotation dicts (the index's ``imgToAnns``)
        self.annotations_by_image: dict[int, list[dict]] = self.coco.imgToAnns

    @property
    def split(self) -> str:
        """Split name: ``val`` for ``instances_val.json``, else the JSON's folder name."""
        stem = self.json_path.stem
        if stem.startswith("instances_"):
            return stem[len("instances_"):]
        return self.json_path.parent.name

    def _candidate_roots(self) -> list[Path]:
        d = self.json_path.parent
        roots = [d, d / "JPEGImages", d / "images"]
        stem = self.json_path.stem
        if stem.startswith("instances_"):
            roots.append(d.parent / "images" / stem[len("instances_"):])
        return roots

    def _guess_image_root(self) -> Path:
        entries = self.raw["images"][:20]
        best, best_hits = self.json_path.parent, -1
        for root in self._candidate_roots():
            hits = sum((root / im.get("path", im.get("file_name", ""))).is_file()
                       or (root / im.get("file_name", "")).is_file() for im in entries)
            if hits > best_hits:
                best, best_hits = root, hits
        return best

    def _image_path(self, entry: Mapping[str, Any]) -> Path:
        fn = str(entry.get("file_name", ""))
        if "path" in entry and (self.image_root / str(entry["path"])).is_file():
            return self.image_root / str(entry["path"])
        return self.image_root / fn

    def category_names(self, annotated_only: bool = True) -> list[str]:
        """Category names, in id order; only those with annotations when ``annotated_only``."""
        if not annotated_only:
            return [self.categories[k] for k in sorted(self.categories)]
        return [self.categories[k] for k in sorted(self.categories) if self.coco.catToImgs.get(k)]

    def instances(self, image_id: int) -> list[CocoInstance]:
        """Annotation objects of one image. Annotations with unknown categories are skipped
        (``carcheck dataset check`` reports them)."""
        out = []
        for ann in self.coco.imgToAnns.get(image_id, []):
            name = self.categories.get(ann.get("category_id"))
            if name is None:
                continue
            out.append(CocoInstance(int(ann.get("id", -1)), name, ann.get("segmentation"),
                                    tuple(ann.get("bbox", (0, 0, 0, 0))), bool(ann.get("iscrowd", False))))
        return out


def negatives_coco(paths: Sequence[str | Path], taxonomy: str) -> dict:
    """A COCO instances file of photos that show none of ``taxonomy``'s classes (hard negatives:
    clean cars for a damage model): every photo an ``images`` entry with its real size, no
    ``annotations``, the taxonomy's classes as ``categories`` (so it trains beside labelled files
    of that taxonomy, each pixel background).

    Args:
        paths: image files (absolute paths are written, so the JSON may live anywhere).
        taxonomy: a taxonomy name, e.g. ``cardd_damage``.

    Returns:
        the COCO dict (``images``, ``annotations`` = ``[]``, ``categories``).

    Raises:
        ImageLoadError: a photo cannot be read (names the file).
        TaxonomyError: unknown taxonomy.
    """
    from .image_header import image_size

    tax = get_taxonomy(taxonomy)
    images = []
    for i, p in enumerate(paths, start=1):
        p = Path(p).resolve()
        w, h = image_size(p)  # the upright size, as load_image returns the pixels (EXIF orientation applied)
        images.append({"id": i, "file_name": str(p), "width": w, "height": h})
    return {"images": images, "annotations": [],
            "categories": [{"id": k, "name": c} for k, c in enumerate(tax.classes, start=1)]}
