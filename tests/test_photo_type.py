"""Photo-type rule (carcheck.pipeline.photo_type) on hand-made probabilities, and the shipped head on
real photos of each type."""

from __future__ import annotations

from pathlib import Path

import pytest

from carcheck.pipeline.photo_type import decide_photo_type, probabilities_from_logits
from carcheck.schema import PHOTO_TYPES, PhotoTypeConfig
from conftest import data_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HEAD = Path(__file__).resolve().parents[1] / "src" / "carcheck" / "models" / "weights" / "classifier_photo_type_lite0.safetensors"


def _p(**kw) -> dict[str, float]:
    return {t: kw.get(t, 0.0) for t in PHOTO_TYPES}


def test_exterior_types_are_summed_before_comparing():
    d = decide_photo_type(_p(exterior_full=0.46, exterior_closeup=0.44, interior=0.1), PhotoTypeConfig(min_confidence=0.6))
    assert d.type == "exterior_full"
    assert d.probability == pytest.approx(0.9) and d.exterior_probability == pytest.approx(0.9)
    d = decide_photo_type(_p(exterior_full=0.35, exterior_closeup=0.3, interior=0.35))
    assert d.type == "exterior_full"  # alone, neither exterior type beats the interior's 0.35
    assert d.search_exterior_damage and d.keep_state_heads and d.uncertain
    d = decide_photo_type(_p(exterior_full=0.2, exterior_closeup=0.7, document=0.1))
    assert d.type == "exterior_closeup" and d.search_exterior_damage


def test_interior_keeps_state_heads_but_is_not_searched():
    d = decide_photo_type(_p(interior=0.9, exterior_full=0.1))
    assert d.type == "interior" and not d.search_exterior_damage and d.keep_state_heads
    assert "not searched for exterior damage" in d.reason


@pytest.mark.parametrize("kind", ["document", "vin_dashboard", "no_vehicle"])
def test_other_types_are_listed_only(kind):
    d = decide_photo_type(_p(**{kind: 0.95, "exterior_full": 0.05}))
    assert d.type == kind and not d.search_exterior_damage and not d.keep_state_heads
    assert d.reason.startswith({"document": "document", "vin_dashboard": "VIN plate", "no_vehicle": "no vehicle"}[kind])


def test_uncertain_photo_with_some_exterior_is_still_searched():
    d = decide_photo_type(_p(interior=0.45, exterior_full=0.42, document=0.13))
    assert d.type == "interior" and d.uncertain and d.search_exterior_damage
    assert "uncertain" in d.reason and "searched for exterior damage anyway" in d.reason
    d = decide_photo_type(_p(interior=0.45, exterior_full=0.42, document=0.13),
                          PhotoTypeConfig(search_if_exterior_at_least=0.5))
    assert not d.search_exterior_damage
    assert not decide_photo_type(_p(interior=0.45, exterior_full=0.3, document=0.25),
                                 PhotoTypeConfig(search_if_exterior_at_least=0.4)).search_exterior_damage
    assert decide_photo_type(_p(interior=0.8, exterior_full=0.1, document=0.1)).search_exterior_damage  # P < 0.85
    d = decide_photo_type(_p(document=0.55, vin_dashboard=0.45), PhotoTypeConfig(min_confidence=0.5))
    assert not d.uncertain


def test_damage_aware_head_only_adds_photos_to_the_search():
    """Issue 26: a photo the first head leaves out is searched when the damage-aware head's P(exterior)
    reaches the threshold; it never removes a photo from the search nor changes the type."""
    no_vehicle = _p(no_vehicle=0.86, exterior_closeup=0.1, document=0.04)
    d = decide_photo_type(no_vehicle, damage_aware_exterior=0.95)
    assert d.type == "no_vehicle" and d.search_exterior_damage and d.keep_state_heads
    assert "damage-aware head calls it exterior (P=0.95 >= 0.90)" in d.reason
    assert d.damage_aware_exterior_probability == 0.95
    assert not decide_photo_type(no_vehicle, damage_aware_exterior=0.85).search_exterior_damage
    off = decide_photo_type(no_vehicle, PhotoTypeConfig(search_if_damage_aware_exterior_at_least=None),
                            damage_aware_exterior=0.99)
    assert not off.search_exterior_damage and off.damage_aware_exterior_probability is None
    assert not decide_photo_type(no_vehicle).search_exterior_damage  # head not installed
    ext = decide_photo_type(_p(exterior_full=0.9, interior=0.1), damage_aware_exterior=0.01)
    assert ext.search_exterior_damage and ext.type == "exterior_full" and "damage-aware" not in ext.reason
    with pytest.raises(ValueError, match="damage_aware_exterior"):
        decide_photo_type(no_vehicle, damage_aware_exterior=1.5)


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="unknown photo types"):
        decide_photo_type({"car": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        decide_photo_type(_p(document=1.2, interior=-0.2))
    with pytest.raises(ValueError, match="sum to 1"):
        decide_photo_type(_p(document=0.5))
    with pytest.raises(ValueError, match="logits"):
        probabilities_from_logits([0.0, 1.0])


def test_probabilities_from_logits_is_a_softmax():
    p = probabilities_from_logits([0, 0, 2, 0, 0, 0])
    assert max(p, key=p.get) == "exterior_full" and sum(p.values()) == pytest.approx(1)


#: Real photos (path, expected type), all in the held-out test split of bench/accuracy/photo_type_labels.py (grouped, so no
#: near-duplicate trained the head) or in no split (the case photos). Paths under ../shared/data, or under
#: data/photo_type/ (the recipe's extraction of fetched sets) for the FETCHED ones.
REAL = [
    ("car_parts/trainingset/JPEGImages/train107.jpg", "exterior_full"),
    ("car_part_crops/compcars_style_interior_voc/images/test_41.jpg", "interior"),
    ("vehicle_presence/coco128/images/000000000049.jpg", "no_vehicle"),
    ("cases/salvage_panamera_167111/167111-02.png", "exterior_full"),
    ("cases/salvage_panamera_167111/167111-09.png", "vin_dashboard"),
]
FETCHED = [("sroie/028.jpg", "document"), ("trodo/00000148-PHOTO-2020-12-19-17-40-59.jpg", "vin_dashboard")]
EXTRACTED = Path(__file__).resolve().parents[1] / "data" / "photo_type"


def test_shipped_head_on_real_photos():
    if not HEAD.is_file():
        pytest.skip(f"{HEAD.name} is not installed")
    missing = [p for p, _ in REAL if not (DATA / p).is_file()]
    if missing:
        pytest.skip(f"shared photos absent: {missing}")
    real = [(DATA / p, t) for p, t in REAL] + [(EXTRACTED / p, t) for p, t in FETCHED if (EXTRACTED / p).is_file()]
    import torch

    from carcheck.data.images import load_image
    from carcheck.models.backbone import build_backbone
    from carcheck.models.classifier import load_head
    from carcheck.models.features import pooled_features

    head, info = load_head(HEAD)
    assert tuple(info.classes) == PHOTO_TYPES
    bb = build_backbone("lite0")
    got = {}
    for p, _ in real:
        f = pooled_features(bb, load_image(p), 512, None, ("full",))
        with torch.no_grad():
            logits = head.head(f)[0]
        got[p] = decide_photo_type(probabilities_from_logits(logits.tolist(), info.classes)).type
    assert got == {p: t for p, t in real}


def test_uncertain_type_is_a_review_reason():
    from carcheck.pipeline.review import photo_review_reasons, photo_type_reason
    from carcheck.schema import PhotoReport

    sure = decide_photo_type(_p(exterior_full=0.9, interior=0.1))
    unsure = decide_photo_type(_p(interior=0.45, exterior_full=0.3, document=0.25))
    assert photo_type_reason(PhotoReport(path="a.jpg", status="assessed", photo_type=sure)) is None
    r = photo_type_reason(PhotoReport(path="b.jpg", status="assessed", photo_type=unsure))
    assert r.startswith("photo type uncertain: interior")
    assert r in photo_review_reasons(PhotoReport(path="b.jpg", status="assessed", photo_type=unsure), None, 0)
    # a photo only the damage-aware head sends to the search: the two heads disagree, a person looks
    rescued = decide_photo_type(_p(no_vehicle=0.9, exterior_closeup=0.1), damage_aware_exterior=0.95)
    r = photo_type_reason(PhotoReport(path="c.jpg", status="assessed", photo_type=rescued))
    assert r.startswith("photo type disagreement: no vehicle (P=0.90)") and "damage-aware head" in r
    not_searched = decide_photo_type(_p(no_vehicle=0.9, exterior_closeup=0.1))
    assert photo_type_reason(PhotoReport(path="d.jpg", status="assessed", photo_type=not_searched)) is None


def test_assessment_searches_only_exterior_photos(tmp_path):
    """The real case's VIN plate and registration card and a held-out interior photo get no exterior damage finding."""
    case = DATA / "cases" / "salvage_panamera_167111"
    if not HEAD.is_file():
        pytest.skip(f"{HEAD.name} is not installed")
    if not case.is_dir():
        pytest.skip("cases/salvage_panamera_167111 is absent from ../shared/data")
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig

    inside_photo = DATA / "car_part_crops" / "compcars_style_interior_voc" / "images" / "test_41.jpg"  # held out
    # a shattered windscreen (VDS test split) that the first head calls "no vehicle" (P 0.86)
    windscreen = DATA / "car_state" / "vds_damage_severity" / "moderate" / "train_moderate_508.jpg"
    photos = [case / f"167111-{n}.png" for n in ("01", "02", "09")] + [inside_photo, windscreen]
    assessor = Assessor(AssessConfig(gradcam=False))
    report, visuals = assessor.assess(photos, case_id="t")
    by = {Path(p.path).name: p for p in report.photos}
    assert {k: v.photo_type.type for k, v in by.items()} == {
        "167111-01.png": "vin_dashboard", "167111-02.png": "exterior_full", "167111-09.png": "vin_dashboard",
        "test_41.jpg": "interior", windscreen.name: "no_vehicle"}
    # ... but the damage-aware head (issue 26) sends the windscreen to the damage search, which finds the shatter;
    # it does not send the interior photo
    shattered = by[windscreen.name]
    assert shattered.photo_type.search_exterior_damage and "damage-aware head" in shattered.photo_type.reason
    assert shattered.photo_type.damage_aware_exterior_probability >= 0.9
    assert shattered.status == "assessed" and "glass_shatter" in {d.damage for d in shattered.detections}
    assert any(r.startswith("photo type disagreement") for r in shattered.review_reasons)
    assert not by["test_41.jpg"].photo_type.search_exterior_damage
    # 01 (P 0.74 < 0.85) is searched in principle, but the presence gate skips it: no vehicle
    assert by["167111-01.png"].status == "skipped" and not by["167111-01.png"].detections
    assert by["167111-09.png"].status == "skipped" and by["167111-09.png"].reason == by["167111-09.png"].photo_type.reason
    inside = by["test_41.jpg"]
    assert inside.status == "assessed" and not inside.detections and not inside.visible_parts
    assert inside.damage_filter is None and "damaged" not in inside.car_state
    assert by["167111-02.png"].photo_type.search_exterior_damage and by["167111-02.png"].quality is not None
    assert all(set(f.photos) <= {by["167111-02.png"].path, shattered.path} for f in report.findings)  # exterior only
    assert report.config.photo_type.min_confidence == 0.85 and report.config.quality.blur_max > 0
    # the HTML report says each photo's type and capture quality (and that the VIN photo was not searched)
    from carcheck.report.html import write_report

    html = write_report(report, visuals, tmp_path)["html"].read_text()
    assert html.count("photo type: ") == 5 and "photo type: interior" in html and "photo type: exterior full" in html
    assert "not searched for exterior damage" in html and html.count("capture quality: ") >= 2
    assert html.count('class="car-diagram"') == 1  # the handler's overview: parts damaged / clean / not seen


def test_shipped_head_searches_held_out_damage_photos():
    """Damaged cars are exterior photos: with the shipped head and the shipped gate
    (``PhotoTypeConfig()``), the lensor test split (held out from the head's recipe, which trains on
    lensor's train split) is searched for exterior damage. The head shipped before issue 26, trained
    without damaged cars, kept this only with the gate wide open (every uncertain photo searched)."""
    if not HEAD.is_file():
        pytest.skip(f"{HEAD.name} is not installed")
    photos = sorted((data_path("car_damage/lensor_severity") / "images" / "test").glob("*.jpg"))
    import torch

    from carcheck.data.images import load_image
    from carcheck.models.backbone import build_backbone
    from carcheck.models.classifier import load_head
    from carcheck.models.features import pooled_features

    head, info = load_head(HEAD)
    bb = build_backbone("lite0")
    searched = []
    for p in photos:
        f = pooled_features(bb, load_image(p), 512, None, ("full",))
        with torch.no_grad():
            logits = head.head(f)[0]
        searched.append(decide_photo_type(probabilities_from_logits(logits.tolist(), info.classes),
                                          PhotoTypeConfig()).search_exterior_damage)
    assert len(photos) >= 50
    assert sum(searched) / len(searched) >= 0.97, f"{len(searched) - sum(searched)} of {len(searched)} not searched"
