"""Capture quality of one photo: is it sharp, well exposed, free of glare, close enough, whole, and
of enough resolution for a damage assessment? Each problem comes with a reason a user can act on
("retake ...") and the measured value against its threshold (:class:`QualityConfig`).

A pure rule module: it takes the decoded photo (``uint8`` RGB array) and, where known, the photo's
original size, its type (:mod:`carcheck.pipeline.photo_type`) and the vehicle's extent in the frame
(:func:`vehicle_extent` of the part map or any vehicle mask); it returns plain data and does no I/O.

Measures (all on the photo resized to :attr:`QualityConfig.measure_side` px on its longer side, so
they do not depend on the camera's resolution):

- **blur** (motion or defocus): the no-reference blur effect of Crete-Roffet et al. ("The blur
  effect: perception and estimation with a new no-reference perceptual blur metric", SPIE Human
  Vision and Electronic Imaging XII, 2007) as implemented by ``skimage.measure.blur_effect``:
  0 sharp .. 1 blurred; it compares the image's neighbour differences with those of a re-blurred
  copy along each axis and keeps the worse axis, so a motion blur along one direction counts.
  Computed on the grey image stretched to its own 1st..99th percentile range, so a dark photo is
  not read as a blurred one.
- **exposure**: the 99th percentile of the luma (Rec. 601, 0..1) for under-exposure (a dark photo
  has nothing bright in it, whatever it shows); the mean luma for over-exposure.
- **glare**: share of the frame in clipped highlights (luma >= 0.97 and every channel >= 245) that do
  not touch the image border, in a photo that is not over-exposed as a whole: reflections of the sun
  or a flash on the paint hide damage, while a white sky or studio background (touching the border)
  does not count.
- **vehicle too far / cut off** (full exterior views only): share of the frame covered by the
  vehicle, and the share of each image border the vehicle touches.
- **resolution**: shorter side of the photo as taken (before any decode-time reduction), in px.

Thresholds: bench/calibration/quality.py calibrated them on real photos (false alarms on the clean held-out
photos of every shared set; detection on the same photos degraded by known amounts); its JSON
is ``bench/results/quality.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ..schema import ISSUE_KINDS, QualityConfig, QualityIssue, QualityMeasures, QualityResult

__all__ = ["VehicleExtent", "measure_quality", "vehicle_extent", "judge_quality", "check_quality"]

@dataclass(frozen=True)
class VehicleExtent:
    """Where the vehicle is in the frame (from a boolean vehicle / part mask).

    Attributes:
        fraction: share of the frame covered by the vehicle, 0..1.
        borders: share of each image border (``left``, ``right``, ``top``, ``bottom``) the vehicle touches, 0..1.
    """

    fraction: float
    borders: dict[str, float]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got dtype {a.dtype} and shape {a.shape}")
    return a


def _resized(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def measure_quality(image: np.ndarray, config: QualityConfig | None = None) -> QualityMeasures:
    """Blur, exposure and highlight measures of one photo (see the module doc).

    Args:
        image: RGB ``uint8`` ``(H, W, 3)``, as decoded (any size).
        config: for ``measure_side``.
    Raises:
        ValueError: not an RGB uint8 image.
    """
    from skimage.measure import blur_effect

    cfg = config or QualityConfig()
    rgb = _resized(_as_rgb(image), cfg.measure_side)
    f = rgb.astype(np.float32) / 255.0
    luma = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    lo, hi = np.percentile(luma, (1, 99))
    grey = np.clip((luma - lo) / max(hi - lo, 1e-3), 0, 1) if hi - lo > 1e-3 else luma
    blur = float(blur_effect(grey, h_size=11)) if min(grey.shape) >= 16 else 1.0
    clipped = (luma >= 0.97) & (rgb.min(axis=2) >= 245)
    return QualityMeasures(blur=round(blur, 4), mean_luma=round(float(luma.mean()), 4),
                           highlight_luma=round(float(hi), 4), clipped_share=round(float(clipped.mean()), 4),
                           glare_share=round(_inner_share(clipped), 4))


def _inner_share(mask: np.ndarray) -> float:
    """Share of the frame in the connected components of ``mask`` that do not touch the image border."""
    import cv2

    if not mask.any():
        return 0.0
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return float((mask & ~np.isin(lab, border)).mean())


def vehicle_extent(mask: np.ndarray) -> VehicleExtent:
    """Extent of the vehicle from a boolean ``(H, W)`` mask (e.g. every pixel of the part map that is
    a car part, at any resolution).

    Raises:
        ValueError: not a 2-D mask.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2 or min(m.shape) < 1:
        raise ValueError(f"expected a 2-D vehicle mask, got shape {m.shape}")
    return VehicleExtent(fraction=float(m.mean()),
                         borders={"left": float(m[:, 0].mean()), "right": float(m[:, -1].mean()),
                                  "top": float(m[0, :].mean()), "bottom": float(m[-1, :].mean())})


def judge_quality(measures: QualityMeasures, config: QualityConfig | None = None,
                  full_size: tuple[int, int] | None = None, photo_type: str | None = None,
                  vehicle: VehicleExtent | None = None) -> QualityResult:
    """The issues of one photo from its measures.

    Args:
        measures: from :func:`measure_quality`.
        config: thresholds.
        full_size: ``(width, height)`` of the photo as taken; None skips the resolution check.
        photo_type: the photo's type (:data:`carcheck.pipeline.photo_type.PHOTO_TYPES`); the
            too-far and cut-off checks run only on ``exterior_full`` photos (a close-up fills the frame
            on purpose; a document or an interior has no vehicle outline), and when the type is unknown
            (None) on any photo with a vehicle extent.
        vehicle: the vehicle's extent; None skips the too-far and cut-off checks.
    """
    cfg = config or QualityConfig()
    issues: list[QualityIssue] = []
    m = measures
    if m.blur > cfg.blur_max:
        issues.append(QualityIssue(kind="blur", value=m.blur, threshold=cfg.blur_max,
                                   reason=f"blurred (blur {m.blur:.2f} > {cfg.blur_max:.2f}): hold the camera still, "
                                          "tap to focus on the car and retake"))
    if m.highlight_luma <= cfg.dark_highlight_max:
        issues.append(QualityIssue(kind="underexposed", value=m.highlight_luma, threshold=cfg.dark_highlight_max,
                                   reason=f"too dark (its brightest parts reach {m.highlight_luma:.2f} <= "
                                          f"{cfg.dark_highlight_max:.2f}): retake in daylight or with more light"))
    over = m.mean_luma >= cfg.bright_mean_min
    if over:
        issues.append(QualityIssue(kind="overexposed", value=m.mean_luma, threshold=cfg.bright_mean_min,
                                   reason=f"over-exposed (mean brightness {m.mean_luma:.2f} >= {cfg.bright_mean_min:.2f}): "
                                          "avoid shooting into the light; lower the exposure and retake"))
    if not over and m.glare_share > cfg.glare_share_max:
        issues.append(QualityIssue(kind="glare", value=m.glare_share, threshold=cfg.glare_share_max,
                                   reason=f"glare ({m.glare_share:.0%} of the photo is clipped white > "
                                          f"{cfg.glare_share_max:.0%}): change the angle so reflections of the sun "
                                          "or a flash are off the paint, and retake"))
    if vehicle is not None and photo_type in (None, "exterior_full"):
        if vehicle.fraction < cfg.vehicle_min_fraction:
            issues.append(QualityIssue(kind="vehicle_too_far", value=round(vehicle.fraction, 4),
                                       threshold=cfg.vehicle_min_fraction,
                                       reason=f"vehicle too far (it fills {vehicle.fraction:.0%} of the photo < "
                                              f"{cfg.vehicle_min_fraction:.0%}): step closer so the car fills the frame"))
        side, share = max(vehicle.borders.items(), key=lambda kv: kv[1])
        if share > cfg.cut_off_border_max and vehicle.fraction >= cfg.vehicle_min_fraction:
            issues.append(QualityIssue(kind="vehicle_cut_off", value=round(share, 4), threshold=cfg.cut_off_border_max,
                                       reason=f"vehicle cut off at the {side} edge ({share:.0%} of that edge is car): "
                                              "step back or turn so the whole car is in the frame"))
    if full_size is not None:
        short = min(full_size)
        if short < cfg.min_short_side:
            issues.append(QualityIssue(kind="low_resolution", value=float(short), threshold=float(cfg.min_short_side),
                                       reason=f"resolution too low ({full_size[0]}x{full_size[1]} px, shorter side < "
                                              f"{cfg.min_short_side} px): send the original photo, not a thumbnail "
                                              "or a screenshot"))
    return QualityResult(ok=not issues, issues=issues, measures=m)


def check_quality(image: np.ndarray, config: QualityConfig | None = None, full_size: tuple[int, int] | None = None,
                  photo_type: str | None = None, vehicle_mask: np.ndarray | None = None) -> QualityResult:
    """:func:`measure_quality` then :func:`judge_quality` (``full_size`` defaults to the image's own size).

    Raises:
        ValueError: not an RGB uint8 image, or a vehicle mask that is not 2-D.
    """
    img = _as_rgb(image)
    size = full_size if full_size is not None else (img.shape[1], img.shape[0])
    ext = vehicle_extent(vehicle_mask) if vehicle_mask is not None else None
    return judge_quality(measure_quality(img, config), config, size, photo_type, ext)
