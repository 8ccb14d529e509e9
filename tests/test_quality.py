"""Capture-quality rules (carcheck.pipeline.quality): hand-made images and masks, then real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from carcheck.pipeline.quality import check_quality, judge_quality, measure_quality, vehicle_extent
from carcheck.schema import QualityConfig, QualityMeasures

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _texture(h=480, w=640, seed=0) -> np.ndarray:
    """A sharp, mid-grey textured RGB image (edges everywhere, no clipping)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(60, 200, size=(h // 8, w // 8, 3)).astype(np.uint8)
    return cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)


def _kinds(res) -> set[str]:
    return {i.kind for i in res.issues}


def test_sharp_texture_is_ok_and_blurred_copy_is_flagged():
    img = _texture()
    assert check_quality(img).ok
    blurred = cv2.GaussianBlur(img, (0, 0), 6)
    res = check_quality(blurred)
    assert "blur" in _kinds(res)
    issue = next(i for i in res.issues if i.kind == "blur")
    assert issue.value > issue.threshold == QualityConfig().blur_max
    assert "retake" in issue.reason and "still" in issue.reason


def test_motion_blur_along_one_axis_is_flagged():
    k = np.zeros((31, 31), np.float32)
    k[15, :] = 1 / 31
    assert "blur" in _kinds(check_quality(cv2.filter2D(_texture(), -1, k)))


def test_blur_threshold_comes_from_the_config():
    blurred = cv2.GaussianBlur(_texture(), (0, 0), 6)
    m = measure_quality(blurred)
    assert "blur" not in _kinds(judge_quality(m, QualityConfig(blur_max=min(0.99, m.blur + 0.01))))
    assert "blur" in _kinds(judge_quality(m, QualityConfig(blur_max=max(0.01, m.blur - 0.01))))


def test_dark_photo_is_underexposed_not_blurred():
    dark = (_texture().astype(np.float32) * 0.03).astype(np.uint8)
    kinds = _kinds(check_quality(dark))
    assert "underexposed" in kinds
    assert "blur" not in kinds  # the grey image is stretched to its own range before the blur measure


def test_bright_photo_is_overexposed_and_not_called_glare():
    bright = np.clip(_texture().astype(np.int32) + 180, 0, 255).astype(np.uint8)
    kinds = _kinds(check_quality(bright))
    assert "overexposed" in kinds and "glare" not in kinds


def test_local_clipped_highlight_is_glare():
    img = _texture()
    img[100:260, 100:300] = 255  # about 10% of the frame clipped white
    res = check_quality(img)
    assert _kinds(res) == {"glare"}
    assert res.issues[0].value == pytest.approx(160 * 200 / (480 * 640), abs=0.01)


def test_vehicle_too_far_and_cut_off_only_for_full_views():
    img = _texture()
    small = np.zeros((480, 640), bool)
    small[200:260, 280:360] = True  # 1.6% of the frame
    assert "vehicle_too_far" in _kinds(check_quality(img, photo_type="exterior_full", vehicle_mask=small))
    assert "vehicle_too_far" not in _kinds(check_quality(img, photo_type="exterior_closeup", vehicle_mask=small))
    assert "vehicle_too_far" not in _kinds(check_quality(img, photo_type="interior", vehicle_mask=small))
    cut = np.zeros((480, 640), bool)
    cut[60:420, 0:400] = True  # touches 75% of the left border
    res = check_quality(img, photo_type="exterior_full", vehicle_mask=cut)
    assert "vehicle_cut_off" in _kinds(res)
    assert "left" in next(i for i in res.issues if i.kind == "vehicle_cut_off").reason
    whole = np.zeros((480, 640), bool)
    whole[80:420, 60:580] = True
    assert check_quality(img, photo_type="exterior_full", vehicle_mask=whole).ok


def test_vehicle_extent_fraction_and_borders():
    m = np.zeros((10, 20), bool)
    m[:, :5] = True
    e = vehicle_extent(m)
    assert e.fraction == pytest.approx(0.25)
    assert e.borders["left"] == 1.0 and e.borders["right"] == 0.0 and e.borders["top"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="2-D"):
        vehicle_extent(np.zeros((2, 2, 2)))


def test_low_resolution_uses_the_size_as_taken():
    img = _texture()
    assert "low_resolution" in _kinds(check_quality(img, full_size=(200, 150)))
    assert "low_resolution" not in _kinds(check_quality(img, full_size=(4000, 3000)))
    m = QualityMeasures(blur=0.1, mean_luma=0.5, highlight_luma=0.9, clipped_share=0.0, glare_share=0.0)
    res = judge_quality(m, QualityConfig(min_short_side=100), full_size=(200, 150))
    assert res.ok


def test_bad_input_and_config_are_refused():
    with pytest.raises(ValueError, match="RGB uint8"):
        measure_quality(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        measure_quality(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(Exception):
        QualityConfig(blur_maxx=0.3)


def test_real_photos_clean_and_degraded():
    photos = sorted((DATA / "car_parts" / "testset" / "JPEGImages").glob("*.jpg"))[:6]
    if not photos:
        pytest.skip("car_parts/testset is absent from ../shared/data")
    from carcheck.data.images import load_image

    clean_ok, blurred_hit, dark_hit = 0, 0, 0
    for p in photos:
        img = load_image(p)
        clean_ok += {"blur", "underexposed", "overexposed"}.isdisjoint(_kinds(check_quality(img)))
        scale = max(img.shape[:2]) / 512
        blurred_hit += "blur" in _kinds(check_quality(cv2.GaussianBlur(img, (0, 0), 4 * scale)))
        lin = (img / 255.0) ** 2.2 / 8  # -3 EV
        dark_hit += "underexposed" in _kinds(check_quality((lin ** (1 / 2.2) * 255).astype(np.uint8)))
    assert clean_ok >= len(photos) - 1
    assert blurred_hit == len(photos)
    assert dark_hit >= len(photos) - 1


def test_quality_issues_become_review_reasons():
    from carcheck.pipeline.review import photo_review_reasons, quality_reasons
    from carcheck.schema import PhotoReport

    bright = np.clip(_texture().astype(np.int32) + 50, 0, 255).astype(np.uint8)  # still bright once blurred
    blurred = check_quality(cv2.GaussianBlur(bright, (0, 0), 6), full_size=(120, 90))
    photo = PhotoReport(path="a.jpg", status="assessed", quality=blurred)
    reasons = quality_reasons(photo)
    assert [r.split(" (")[0] for r in reasons] == ["capture: blurred", "capture: resolution too low"]
    assert photo_review_reasons(photo, None, 0) == reasons
    assert quality_reasons(PhotoReport(path="b.jpg", status="assessed", quality=check_quality(_texture()))) == []
    assert quality_reasons(PhotoReport(path="c.jpg", status="assessed")) == []


def test_white_sky_touching_the_border_is_not_glare():
    img = _texture()
    img[:120] = 255  # a clipped white sky: 25% of the frame, along the top edge
    m = measure_quality(img)
    assert m.clipped_share == pytest.approx(0.25, abs=0.01) and m.glare_share == 0.0
    assert "glare" not in _kinds(check_quality(img))
