"""The schema of a COCO instances file: the fields carcheck reads, their types, unique ids.

:func:`coco_schema_problems` lists every problem of a parsed file with its JSON path (``dataset
check`` prints them, the reader of :mod:`carcheck.data.coco` refuses a file that has any);
:class:`CocoFormatError` is the error every COCO reader raises, naming the file.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictInt, StrictStr, ValidationError, field_validator

__all__ = ["CocoFormatError", "CocoFile", "CocoImageEntry", "CocoAnnotationEntry", "CocoCategoryEntry",
           "coco_schema_problems", "json_path"]


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
