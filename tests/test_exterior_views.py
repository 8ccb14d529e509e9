"""K_agree over exterior views (issue 26): a photo searched although the photo-type head does not call it an
exterior view (an interior, a cargo area, a close-up it is unsure of) counts as a view of a part only where it
shows damage on it, and a part only such photos show goes to review (pipeline/agreement.py)."""

import pytest

from carcheck.pipeline.agreement import PhotoFindings, reconcile, reconcile_parts

REAR = {"back_bumper", "trunk", "back_glass"}
WHY = "seen only in photos the photo-type head does not call exterior views"


def _parts(photos):
    return {p.part: p for p in reconcile_parts(photos, reconcile(photos, 0.5), 0.5)}


def test_a_searched_non_exterior_photo_is_no_clean_view_and_alone_goes_to_review():
    damaged = PhotoFindings("rear.jpg", REAR, {("back_bumper", "dent"): (0.8, 0.3, "large")})
    side = {"back_bumper", "back_left_door", "wheel"}  # another view than rear.jpg
    cargo = PhotoFindings("cargo.jpg", side, {}, exterior_view=False)  # its part map "sees" the bumper, no damage
    part = _parts([damaged, cargo])["back_bumper"]
    assert part.k_agree == 1.0 and part.c_refined == pytest.approx(0.8) and not part.needs_review
    (pair,) = reconcile([damaged, cargo], 0.5)
    assert pair.k_agree == 1.0 and not pair.needs_review
    as_exterior = PhotoFindings("cargo.jpg", side, {})
    part = _parts([damaged, as_exterior])["back_bumper"]
    assert part.k_agree == 0.5 and part.needs_review  # the same photo typed exterior is a clean view
    inside = PhotoFindings("inside.jpg", REAR, {("back_glass", "glass_shatter"): (0.9, 0.2, "medium")}, exterior_view=False)
    part = _parts([damaged, inside])["back_glass"]
    assert part.k_agree == 1.0 and part.needs_review and WHY in part.review_reasons
    pair = next(f for f in reconcile([damaged, inside], 0.5) if f.part == "back_glass")
    assert pair.needs_review and WHY in pair.review_reasons


def test_the_demo_case_rear_is_confident_and_its_front_is_not():
    from carcheck.models.inference import DEFAULT_SEGMENTERS
    from conftest import data_path

    if not all(p.exists() for p in DEFAULT_SEGMENTERS):
        pytest.skip("shipped segmenter weights missing")
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig

    photos = sorted(data_path("cases/salvage_panamera_167111").glob("*.png"))
    report, _ = Assessor(AssessConfig(gradcam=False)).assess(photos, case_id="panamera")
    confident = {p.part for p in report.parts if not p.needs_review}
    assert "back_bumper" in confident and confident & {"trunk", "tailgate"}, confident
    assert not confident & {"front_bumper", "hood", "front_glass", "front_left_light", "front_right_light"}
