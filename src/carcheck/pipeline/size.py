"""Sizes of a damaged region: its size class (Ma et al. II-D-2) and the rescaling of areas and boxes
from the network's label map to the photo's own pixels.

The networks see the photo at ``longest_side`` px (and a large photo may be decoded at reduced
size first); every area (px²) and box a report gives is in pixels of the original photo.
"""

from __future__ import annotations

from ..report.schema import FusionConfig, PhotoReport

__all__ = ["size_class", "scale_area", "scale_bbox", "to_photo_pixels"]


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
    (width, height, each detection's area in px² and box), in place; nothing when the sizes agree."""
    if report.width is None or report.height is None or (report.width, report.height) == (width, height):
        return
    sx, sy = width / report.width, height / report.height
    report.width, report.height = width, height
    for d in report.detections:
        d.area_px = round(d.area_px * sx * sy, 1)
        d.bbox_xywh = scale_bbox(d.bbox_xywh, sx, sy)
