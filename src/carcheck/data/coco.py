"""COCO instance-segmentation reader: per-instance masks and semantic masks.

Polygons (single and multi-polygon), uncompressed and compressed RLE are decoded with
pycocotools. Category names are mapped to a target taxonomy through the declared tables
of :mod:`carcheck.data.taxonomy`.

Overlap rule for semantic masks: instances are painted from lowest to highest priority,
so the highest priority wins a pixel. For damage taxonomies the priority is CarDD's
(crack > dent > scratch, :data:`~carcheck.data.taxonomy.DAMAGE_PRIORITY`); ties, and all
part taxonomies, are broken by area: a smaller instance is painted over a larger one
(a mirror over the door it overlaps).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictInt, StrictStr, ValidationError, field_validator
from torch.utils.data import Dataset

from .images import ImageLoadError, display_name, load_image
from .taxonomy import DAMAGE_PRIORITY, IGNORE, MAPPINGS, TAXONOMIES, Taxonomy, TaxonomyError, get_taxonomy

__all__ = [
    "CocoFile",
    "coco_schema_problems",
    "json_path",
    "CocoFormatError",
    "CocoImage",
    "CocoInstance",
    "CocoSource",
    "CocoSegmentationDataset",
    "category_map_for",
    "find_coco_files",
    "negatives_coco",
]


class CocoFormatError(ValueError):
    """A COCO annotation file is unreadable or not COCO instances; the message names the file.

    Attributes:
        problems: ``[(JSON path, message)]`` for schema violations (e.g.
            ``("annotations[3].bbox", "Input should be a valid list")``); empty when the file as a
            whole cannot be read.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


# ---------------------------------------------------------------- schema of a COCO instances file
_Num = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # int or float; not bool, str, NaN, inf
_Id = Annotated[StrictInt, Field(ge=-2 ** 63, le=2 ** 63 - 1)]  # 64-bit, as pycocotools / numpy index them


def _check_segmentation(seg: Any) -> Any:
    """Polygons (a list of ``[x1, y1, x2, y2, ...]`` lists of finite numbers) or RLE
    (``{"counts": [int, ...] | str, "size": [height, width]}``); None when absent. Degenerate
    polygons (too few points) are not schema errors: ``dataset check`` reports them."""
    if seg is None:
        return seg
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list):
                raise ValueError(f"polygon {k} is {type(poly).__name__}, not a list of coordinates")
            for j, v in enumerate(poly):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"polygon {k} coordinate {j} is {v!r:.40}, not a finite number")
        return seg
    if isinstance(seg, dict):
        _Rle.model_validate(seg)
        return seg
    raise ValueError(f"segmentation is {type(seg).__name__}: needs polygons (a list of coordinate lists) or RLE "
                     "{counts, size}")


class _Rle(BaseModel):
    counts: list[Annotated[StrictInt, Field(ge=0)]] | StrictStr
    size: Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=2, max_length=2)]


class CocoImageEntry(BaseModel):
    """One entry of ``images`` (other keys are allowed and ignored)."""

    model_config = ConfigDict(extra="allow")
    id: _Id
    file_name: Annotated[StrictStr, Field(min_length=1, pattern=r"^[^\x00]*$")]
    width: Annotated[StrictInt, Field(ge=1)] | None = None
    height: Annotated[StrictInt, Field(ge=1)] | None = None
    path: Annotated[StrictStr, Field(pattern=r"^[^\x00]*$")] | None = None


class CocoAnnotationEntry(BaseModel):
    """One entry of ``annotations`` (other keys are allowed and ignored)."""

    model_config = ConfigDict(extra="allow")
    id: _Id
    image_id: _Id
    category_id: _Id
    segmentation: Any = None
    bbox: Annotated[list[_Num], Field(min_length=4, max_length=4)] | None = None
    area: Annotated[_Num, Field(ge=0)] | None = None
    iscrowd: Any = 0

    _seg = field_validator("segmentation")(_check_segmentation)

    @field_validator("iscrowd")
    @classmethod
    def _crowd_flag(cls, v: Any) -> Any:
        if v not in (0, 1) or not isinstance(v, (int, bool)):
            raise ValueError("iscrowd must be 0 or 1")
        return v

    @field_validator("bbox")
    @classmethod
    def _box_size(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (v[2] < 0 or v[3] < 0):
            raise ValueError(f"bbox width and height must be >= 0 (got {v[2]}, {v[3]})")
        return v


class CocoCategoryEntry(BaseModel):
    """One entry of ``categories`` (other keys are allowed and ignored)."""

    model_config = ConfigDict(extra="allow")
    id: _Id
    name: Annotated[StrictStr, Field(min_length=1)]


class CocoFile(BaseModel):
    """A COCO instances file: the fields carcheck reads, with their types (pydantic)."""

    model_config = ConfigDict(extra="allow")
    images: list[CocoImageEntry]
    annotations: list[CocoAnnotationEntry]
    categories: list[CocoCategoryEntry]


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def json_path(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a JSON path: ``("annotations", 3, "bbox")`` -> ``annotations[3].bbox``."""
    out = ""
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in _UNION_TAGS):
            continue  # pydantic names the union member it tried ("list[constrained-int]", "str"): not a key
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def coco_schema_problems(data: Any) -> list[tuple[str, str]]:
    """Every schema problem of a parsed COCO instances file: ``[(JSON path, message)]``.

    Checks the types of the fields carcheck reads (:class:`CocoFile`) and that ids are unique
    within ``images``, ``annotations`` and ``categories``. Never raises.
    """
    if not isinstance(data, dict):
        return [("(top level)", f"is a JSON {type(data).__name__}, not an object with images, annotations, categories")]
    try:
        CocoFile.model_validate(data)
        out: list[tuple[str, str]] = []
    except ValidationError as e:
        out = []
        for err in e.errors(include_url=False):
            got = err.get("input")
            shown = "" if err["type"] == "missing" else f" (got {_short(got)})"
            item = (json_path(err["loc"]), err["msg"].removeprefix("Value error, ") + shown)
            if item not in out:
                out.append(item)
    for key in ("images", "annotations", "categories"):
        entries = data.get(key)
        if not isinstance(entries, list):
            continue
        first: dict[int, int] = {}
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and type(entry.get("id")) is int:
                j = first.setdefault(entry["id"], i)
                if j != i:
                    out.append((f"{key}[{i}].id", f"duplicate id {entry['id']} (also {key}[{j}].id)"))
    return out


def _short(value: Any, n: int = 60) -> str:
    """``repr`` of a value, cut to ``n`` characters."""
    try:
        r = repr(value)
    except Exception:
        r = f"<{type(value).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


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


def category_map_for(names: Sequence[str], target: Taxonomy) -> dict[str, str | None]:
    """Map COCO category names onto ``target`` using the declared taxonomy tables.

    A name that is a class of ``target`` maps to itself; otherwise the first declared
    mapping from a taxonomy containing the name to ``target`` is used; names covered by
    neither are dropped (``None``), e.g. the part categories of lplenka's merged file
    when the target is a damage taxonomy.
    """
    out: dict[str, str | None] = {}
    for name in names:
        if name in target.classes:
            out[name] = name
            continue
        out[name] = None
        for (src, dst), m in MAPPINGS.items():
            if dst == target.name and name in TAXONOMIES[src].classes:
                out[name] = m.map_name(name)
                break
    return out


def _is_damage(target: Taxonomy) -> bool:
    return any(c in DAMAGE_PRIORITY for c in target.classes)


def semantic_mask(instances: Sequence[CocoInstance], height: int, width: int, target: Taxonomy,
                  category_map: Mapping[str, str | None]) -> np.ndarray:
    """Rasterise instances into one semantic mask with the module's overlap rule.

    Instances whose category maps to :data:`~carcheck.data.taxonomy.IGNORE` are painted 255 (the
    ignore label) first, so any labelled class overlapping them wins.

    Returns:
        ``np.ndarray`` ``(height, width)``, ``uint8``; 0 = background, ``i + 1`` =
        ``target.classes[i]``, 255 = ignored.
    """
    damage = _is_damage(target)
    painted = []
    ignored = np.zeros((height, width), dtype=bool)
    for inst in instances:
        cls = category_map.get(inst.category)
        if cls is None:
            continue
        m = inst.to_mask(height, width)
        if cls == IGNORE:
            ignored |= m
            continue
        rank = DAMAGE_PRIORITY.index(cls) if damage and cls in DAMAGE_PRIORITY else len(DAMAGE_PRIORITY)
        painted.append((rank, int(m.sum()), target.index(cls) + 1, m))
    # paint low priority first: higher rank number = lower priority; larger area first
    painted.sort(key=lambda t: (-t[0], -t[1]))
    out = np.zeros((height, width), dtype=np.uint8)
    out[ignored] = 255
    for _, _, label, m in painted:
        out[m] = label
    return out


@dataclass
class CocoSegmentationDataset(Dataset):
    """Torch dataset over one or more COCO files: image + semantic mask (+ instances).

    Args:
        sources: COCO JSON paths (or :class:`CocoSource` objects).
        target: target taxonomy name, e.g. ``"dsmlr_parts"`` or ``"damage_type"``.
        transform: optional callable ``(image, mask) -> (image, mask)`` applied to the
            uint8 CHW image tensor and int64 HW mask tensor (torchvision transforms v2
            with ``tv_tensors.Mask`` fit here).
        with_instances: also return per-instance binary masks and target labels.

    Items are dicts: ``image`` (``uint8`` tensor ``(3, H, W)``), ``mask`` (``int64``
    ``(H, W)``), ``path`` (str), ``image_id`` (int) and, with instances, ``instance_masks``
    (``bool`` ``(N, H, W)``) and ``instance_labels`` (``int64`` ``(N,)``, 1-based).

    Raises:
        ImageLoadError: from ``__getitem__``, naming the file, for unreadable images.
    """

    sources: Sequence[str | Path | CocoSource]
    target: str
    transform: Callable | None = None
    with_instances: bool = False
    _items: list[tuple[CocoSource, CocoImage]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.taxonomy = get_taxonomy(self.target)
        self.coco_sources = [s if isinstance(s, CocoSource) else CocoSource(s) for s in self.sources]
        self._items = [(src, im) for src in self.coco_sources for im in src.images]
        names = sorted({n for s in self.coco_sources for n in s.category_names()})
        self.category_map = category_map_for(names, self.taxonomy)
        if not any(v is not None and v != IGNORE for v in self.category_map.values()):
            raise TaxonomyError(f"no category of {names} maps to taxonomy {self.target!r}")

    def __len__(self) -> int:
        return len(self._items)

    def image_paths(self) -> list[Path]:
        """Resolved image paths, in item order."""
        return [im.path for _, im in self._items]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, list[CocoInstance]]:
        """Untransformed ``(image HxWx3 uint8, mask HxW uint8, instances)`` of item ``index``.

        The mask is rasterised at the file's real size; a declared size that differs is
        an error (``carcheck dataset check`` finds these up front).

        Raises:
            ImageLoadError: unreadable image or annotation/file size mismatch.
        """
        src, im = self._items[index]
        image = load_image(im.path)
        h, w = image.shape[:2]
        if (im.width, im.height) != (w, h) and im.width and im.height:
            raise ImageLoadError(im.path, f"annotation says {im.width}x{im.height}, file is {w}x{h}")
        insts = src.instances(im.id)
        return image, semantic_mask(insts, h, w, self.taxonomy, self.category_map), insts

    def __getitem__(self, index: int) -> dict:
        src, im = self._items[index]
        image, mask, insts = self.load(index)
        img_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        mask_t = torch.from_numpy(mask.astype(np.int64))
        if self.transform is not None:
            img_t, mask_t = self.transform(img_t, mask_t)
        item = {"image": img_t, "mask": mask_t, "path": str(im.path), "image_id": im.id}
        if self.with_instances:
            h, w = image.shape[:2]
            kept = [(i, self.category_map.get(i.category)) for i in insts]
            kept = [(i, c) for i, c in kept if c is not None and c != IGNORE]
            masks = np.stack([i.to_mask(h, w) for i, _ in kept]) if kept else np.zeros((0, h, w), bool)
            item["instance_masks"] = torch.from_numpy(masks)
            item["instance_labels"] = torch.tensor([self.taxonomy.index(c) + 1 for _, c in kept], dtype=torch.int64)
        return item


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
