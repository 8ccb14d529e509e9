"""Sizes of a damaged region: its size class (Ma et al. II-D-2), the rescaling of areas and boxes
from the network's label map to the photo's own pixels, and its size in centimetres.

The networks see the photo at ``longest_side`` px (and a large photo may be decoded at reduced
size first); every area (px²) and box a report gives is in pixels of the original photo.

Size in cm (issue 16 item 3): a photo has no absolute scale, but the part the damage lies on has a
typical real size (``part_sizes.yaml``: width and height of each DSMLR part as a low-high range). Along
each image axis, cm per px = the part's real extent / its extent in px in this photo, and the damage
region's box and pixel area are scaled by it. Because the ratio region / part is taken along one axis
within one part, a part seen at an angle (foreshortened) scales its damage by the same factor, as long
as the damage lies in the part's plane. The stated range comes from the table's range; when the part
is cut off by the photo's edge along one axis, that axis's scale is bounded by the visible extent (the
part is at least that large) and estimated from the other axis (square pixels; a part turned about the
vertical only widens cm per px horizontally, so the vertical scale is a lower bound). No estimate, with
the reason, when the damage lies on no part, the part has no declared size, is cut off along both axes or
by more than ``SizeConfig.min_visible_fraction``, or spans fewer than ``SizeConfig.min_part_px`` px.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..schema import CaseReport, Finding, FusionConfig, PhotoDetection, PhotoReport, SizeCm, SizeConfig

__all__ = ["size_class", "scale_area", "scale_bbox", "to_photo_pixels", "PartSize", "PartSizeTable",
           "PartSizeError", "DEFAULT_PART_SIZES", "load_part_sizes", "default_part_sizes", "estimate_size_cm",
           "region_size_cm", "finding_sizes", "size_findings"]

#: The shipped table of typical part sizes.
DEFAULT_PART_SIZES = Path(__file__).with_name("part_sizes.yaml")


def size_class(fraction: float, cfg: FusionConfig, closeup: bool) -> str:
    """``small`` / ``medium`` / ``large`` from the covered fraction of the part (``cfg.size_thresholds``);
    for a close-up the fraction is divided by ``cfg.closeup_scale`` first."""
    f = fraction / cfg.closeup_scale if closeup else fraction
    lo, hi = cfg.size_thresholds
    return "small" if f < lo else "medium" if f < hi else "large"


def scale_area(area: float, sx: float, sy: float) -> float:
    """An area in px² of one image, in px² of an image ``sx`` x ``sy`` times as large (rounded to 0.1)."""
    return round(area * (sy * sx), 1)


def scale_bbox(bbox, sx: float, sy: float) -> list[float]:
    """A box ``(x, y, w, h)`` in px of one image, in px of an image ``sx`` x ``sy`` times as large
    (each rounded to 0.1)."""
    return [round(v * f, 1) for v, f in zip(bbox, (sx, sy, sx, sy))]


def to_photo_pixels(report: PhotoReport, width: int, height: int) -> None:
    """Scale a photo report made on a reduced-size decode to the photo's ``width`` x ``height`` px
    (width, height, each detection's and instance's area in px² and box, instance outlines), in place; nothing
    when the sizes agree."""
    if report.width is None or report.height is None or (report.width, report.height) == (width, height):
        return
    sx, sy = width / report.width, height / report.height
    report.width, report.height = width, height
    for d in [*report.detections, *report.instances]:
        d.area_px = round(d.area_px * sx * sy, 1)
        d.bbox_xywh = scale_bbox(d.bbox_xywh, sx, sy)
    for i in report.instances:
        i.polygon = [round(v * (sx if k % 2 == 0 else sy), 1) for k, v in enumerate(i.polygon)]


# ---------------------------------------------------------------------------------------------- size in cm
class PartSize(BaseModel):
    """Typical real size of one part: ``[low, high]`` cm along its usual horizontal (width) and vertical
    (height) image axis, and why (``source``)."""

    model_config = ConfigDict(extra="forbid")

    width_cm: tuple[float, float]
    height_cm: tuple[float, float]
    multiple: bool = Field(False, description="several instances of the class can be in one photo (wheels): "
                           "only the instance the damage touches gives the scale")
    source: str = Field(min_length=1, description="where the numbers come from")

    @field_validator("width_cm", "height_cm")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"a size range is [low, high] cm with 0 < low <= high, got {list(v)}")
        return v

    @property
    def typical(self) -> tuple[float, float]:
        """Midpoints (width, height) in cm."""
        return (sum(self.width_cm) / 2, sum(self.height_cm) / 2)


class PartSizeTable(BaseModel):
    """The table: ``version`` and part name -> :class:`PartSize`."""

    model_config = ConfigDict(extra="forbid")

    version: int
    parts: dict[str, PartSize] = Field(min_length=1)


class PartSizeError(ValueError):
    """A part-size table that cannot be used: ``"<file>: <field>: <problem>"``."""


def load_part_sizes(path: str | Path | None = None) -> PartSizeTable:
    """Read and validate a part-size table (format: ``part_sizes.yaml``).

    Args:
        path: a YAML file; None: the shipped table (validated once, cached).
    Raises:
        PartSizeError: naming the file (and the field): unreadable, not YAML, not a mapping, or a field
            that fails validation (e.g. a range with low > high, a missing ``source``).
    """
    if path is None:
        return default_part_sizes()
    return _load_part_sizes(Path(path))


@lru_cache(maxsize=1)
def default_part_sizes() -> PartSizeTable:
    """The shipped table (:data:`DEFAULT_PART_SIZES`)."""
    return _load_part_sizes(DEFAULT_PART_SIZES)


def _load_part_sizes(path: Path) -> PartSizeTable:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PartSizeError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise PartSizeError(f"{path}: not valid YAML text ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PartSizeError(f"{path}: a part-size table is a YAML mapping (version, parts), got {type(raw).__name__}")
    try:
        return PartSizeTable.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
        raise PartSizeError(f"{path}: {where}: {err['msg'].removeprefix('Value error, ')}{more}") from None


def _part_extent(region: np.ndarray, part: np.ndarray, multiple: bool, min_share: float
                 ) -> tuple[int, int, int, int] | None:
    """Box ``(x, y, w, h)`` px of the part the region lies on: the part's pixels with the region's, its
    8-connected fragments under ``min_share`` of the part left out unless the region touches them; for a
    ``multiple`` part only the fragments the region touches."""
    m = (part | region).astype(np.uint8)
    n, cc, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return None
    touched = set(np.unique(cc[region]).tolist()) - {0}
    total = stats[1:, cv2.CC_STAT_AREA].sum()
    keep = [k for k in range(1, n) if k in touched or (not multiple and stats[k, cv2.CC_STAT_AREA] >= min_share * total)]
    if not keep:
        return None
    x0 = min(stats[k, cv2.CC_STAT_LEFT] for k in keep)
    y0 = min(stats[k, cv2.CC_STAT_TOP] for k in keep)
    x1 = max(stats[k, cv2.CC_STAT_LEFT] + stats[k, cv2.CC_STAT_WIDTH] for k in keep)
    y1 = max(stats[k, cv2.CC_STAT_TOP] + stats[k, cv2.CC_STAT_HEIGHT] for k in keep)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def _axis_scale(real: tuple[float, float], px: int, cut: bool, other: tuple[float, float, float] | None
                ) -> tuple[float, float, float, float]:
    """(low, typical, high) cm per px along one axis and the visible share of the part along it."""
    lo, hi = real[0] / px, real[1] / px
    typ = (real[0] + real[1]) / 2 / px
    if not cut:
        return lo, typ, hi, 1.0
    # cut off: the part is at least ``px`` long (cm/px <= high / px); the other axis' scale is a lower bound
    upper = hi
    lo_c = min(other[0], upper)
    typ_c = min(max(other[1], lo_c), upper)
    visible = min(1.0, px * typ_c / ((real[0] + real[1]) / 2))
    return lo_c, typ_c, upper, visible


def estimate_size_cm(region: np.ndarray, part_mask: np.ndarray, part: str, table: PartSizeTable | None = None,
                     cfg: SizeConfig | None = None) -> SizeCm:
    """Size in cm of one damage region on one part (module docstring for the method).

    Args:
        region: ``(H, W)`` bool, the region's pixels (any resolution; the ratio to the part is what counts).
        part_mask: ``(H, W)`` bool, the pixels labelled as the part in the same photo.
        part: the part's name (a key of ``table.parts``), or ``unassigned``.
        table: typical part sizes (default: the shipped ``part_sizes.yaml``).
        cfg: thresholds (default :class:`~carcheck.schema.SizeConfig`).
    Returns:
        a :class:`~carcheck.schema.SizeCm`: width / height of the region's box and the area of its
        pixels (cm, cm²) with low-high ranges, or only ``reason`` when there is no estimate.
    Raises:
        ValueError: the masks differ in shape or are not 2-D.
    """
    table = table or default_part_sizes()
    cfg = cfg or SizeConfig()
    region, part_mask = np.asarray(region, bool), np.asarray(part_mask, bool)
    if region.ndim != 2 or region.shape != part_mask.shape:
        raise ValueError(f"region {region.shape} and part mask {part_mask.shape} must be 2-D of one shape")
    row = table.parts.get(part)
    if row is None:
        why = ("the damage lies on no segmented part" if part == "unassigned"
               else f"no typical size declared for {part!r} (part_sizes v{table.version})")
        return SizeCm(reason=why)
    if not region.any():
        return SizeCm(reason="empty region")
    box = _part_extent(region, part_mask, row.multiple, cfg.min_instance_share)
    h_img, w_img = region.shape
    x, y, pw, ph = box
    if pw < cfg.min_part_px or ph < cfg.min_part_px:
        return SizeCm(reason=f"{part} is only {pw} x {ph} px in the photo (< {cfg.min_part_px} px at network "
                             f"resolution): too small to scale from")
    cut_x, cut_y = x <= 0 or x + pw >= w_img, y <= 0 or y + ph >= h_img
    if cut_x and cut_y:
        return SizeCm(reason=f"{part} is cut off by the photo's edges horizontally and vertically: no scale")
    sy0 = _axis_scale(row.height_cm, ph, False, None)
    sx0 = _axis_scale(row.width_cm, pw, False, None)
    sx = _axis_scale(row.width_cm, pw, True, sy0) if cut_x else sx0
    sy = _axis_scale(row.height_cm, ph, True, sx0) if cut_y else sy0
    visible = min(sx[3], sy[3])
    if visible < cfg.min_visible_fraction:
        axis = "width" if cut_x else "height"
        return SizeCm(part_visible_fraction=round(visible, 3),
                      reason=f"{part} is cut off by the photo's edge: about {100 * visible:.0f}% of its {axis} in "
                             f"frame (< {100 * cfg.min_visible_fraction:.0f}%)")
    ys, xs = np.nonzero(region)
    rw, rh, area = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1), int(region.sum())
    r1 = lambda v: round(float(v), 1)  # noqa: E731
    cut = " (cut off horizontally: scale from its height)" if cut_x else \
        " (cut off vertically: scale from its width)" if cut_y else ""
    basis = (f"{part} typically {row.width_cm[0]:g}-{row.width_cm[1]:g} x {row.height_cm[0]:g}-"
             f"{row.height_cm[1]:g} cm (part_sizes v{table.version}), {pw} x {ph} px in the photo{cut}; "
             f"region {rw} x {rh} px")
    return SizeCm(width_cm=r1(rw * sx[1]), height_cm=r1(rh * sy[1]), area_cm2=r1(area * sx[1] * sy[1]),
                  width_range_cm=(r1(rw * sx[0]), r1(rw * sx[2])), height_range_cm=(r1(rh * sy[0]), r1(rh * sy[2])),
                  area_range_cm2=(r1(area * sx[0] * sy[0]), r1(area * sx[2] * sy[2])),
                  part_visible_fraction=round(visible, 3), basis=basis)


def region_size_cm(region_mask: np.ndarray | None, part_label: np.ndarray, part_names, part: str,
                   cfg: SizeConfig | None = None, table: PartSizeTable | None = None) -> SizeCm:
    """:func:`estimate_size_cm` of a fusion region (:class:`~.fusion.Region` ``mask`` and ``part``) on the
    photo's part label map ``(H, W)`` (0 background, ``i`` = ``part_names[i - 1]``)."""
    if region_mask is None:
        return SizeCm(reason="no region mask")
    names = list(part_names)
    part_mask = part_label == names.index(part) + 1 if part in names else np.zeros(part_label.shape, bool)
    return estimate_size_cm(region_mask, part_mask, part, table, cfg)


def _rel_spread(s: SizeCm) -> float:
    lo, hi = s.area_range_cm2
    return (hi - lo) / max(s.area_cm2, 1e-9)


def finding_sizes(report: CaseReport) -> None:
    """:func:`size_findings` on a report's photos and findings (in place)."""
    size_findings(report.photos, report.findings)


def size_findings(photos: Sequence[PhotoReport], findings: Sequence[Finding]) -> None:
    """Each finding's ``size_cm`` and ``size_cm_photo`` from its photos' detections, in place.

    Of the photos with an estimate, the one where the finding covers the largest share of the part (the
    rule of the finding's ``area_fraction_of_part``, so its size class and its cm agree where that photo
    gives a scale: each photo may see only some of the damage), then the largest ``part_visible_fraction``,
    then the narrowest relative area range. Several regions of the finding in that photo: area (and its
    range) summed, width and height those of the largest region. Without an estimate in any photo:
    ``reason`` of the finding's largest region.
    """
    by_path = {p.path: p for p in photos}
    for f in findings:
        per_photo: list[tuple[str, list[PhotoDetection]]] = []
        for name in f.photos:
            ph = by_path.get(name)
            dets = [d for d in (ph.detections if ph else []) if (d.part, d.damage) == (f.part, f.damage)]
            if dets:
                per_photo.append((name, dets))
        share = {n: sum(d.area_fraction_of_part for d in ds) for n, ds in per_photo}
        sized = [(n, [d for d in ds if d.size_cm is not None and d.size_cm.area_cm2 is not None])
                 for n, ds in per_photo]
        sized = [(n, ds) for n, ds in sized if ds]
        if not sized:
            dets = [d for _, ds in per_photo for d in ds]
            if not dets or all(d.size_cm is None for d in dets):
                f.size_cm, f.size_cm_photo = None, None  # reports made before sizes in cm
                continue
            big = max((d for d in dets if d.size_cm is not None), key=lambda d: d.area_px)
            f.size_cm, f.size_cm_photo = SizeCm(reason=f"no photo gives a scale: {big.size_cm.reason}"), None
            continue
        name, ds = max(sized, key=lambda nd: (share[nd[0]], max(d.size_cm.part_visible_fraction for d in nd[1]),
                                              -min(_rel_spread(d.size_cm) for d in nd[1])))
        big = max(ds, key=lambda d: d.size_cm.area_cm2).size_cm
        if len(ds) == 1:
            f.size_cm = big.model_copy()
        else:
            lo = sum(d.size_cm.area_range_cm2[0] for d in ds)
            hi = sum(d.size_cm.area_range_cm2[1] for d in ds)
            f.size_cm = big.model_copy(update={
                "area_cm2": round(sum(d.size_cm.area_cm2 for d in ds), 1), "area_range_cm2": (round(lo, 1), round(hi, 1)),
                "basis": f"{big.basis}; area: sum of {len(ds)} regions, width x height: the largest"})
        f.size_cm_photo = name
