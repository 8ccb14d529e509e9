"""The assessment's rules on hand-made inputs (no model files): privacy blurring, the damage-filter
verdict table, the severity gate, the OOD rule, the presence gate, K_agree / C_refined, the
same-vehicle flag and make/model vote, the review decisions, and the rescaling of areas and boxes
to the photo's own pixels. Each test pins one behaviour and fails when it breaks."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from carcheck.pipeline import checks, review
from carcheck.pipeline.agreement import PhotoFindings, reconcile
from carcheck.pipeline.identity import make_model_vote, same_vehicle_check
from carcheck.models.privacy import PrivateRegion
from carcheck.schema import DamageFilter, PhotoDetection, PhotoReport, VehicleMatch


# ------------------------------------------------------------------ privacy
def _noise(h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_blur_changes_pixels_inside_a_detected_box_and_nowhere_else(monkeypatch):
    import carcheck.report.privacy as privacy

    img = _noise()
    box = (40, 30, 40, 20)  # x, y, w, h
    monkeypatch.setattr(privacy, "detect_private_regions", lambda image: [PrivateRegion("plate", box, 0.9)])
    out, n = privacy.blur_private_regions(img)
    assert n == 1 and out.shape == img.shape and out.dtype == np.uint8
    x, y, w, h = box
    gx, gy = 0, 0  # the detector grows its boxes; the blur covers exactly the region
    inside = np.zeros(img.shape[:2], bool)
    inside[y - gy:y + h + gy, x - gx:x + w + gx] = True
    changed = (out != img).any(axis=2)
    assert not changed[~inside].any(), "pixels outside the detected box changed"
    assert changed[y:y + h, x:x + w].mean() > 0.9, "the detected box was not blurred"
    # blurred means smoothed: the noise inside loses most of its variance
    assert out[y:y + h, x:x + w].std() < 0.5 * img[y:y + h, x:x + w].std()
    monkeypatch.setattr(privacy, "detect_private_regions", lambda image: [])
    same, n0 = privacy.blur_private_regions(img)
    assert n0 == 0 and (same == img).all()


def test_report_writes_the_blurred_photo(monkeypatch, tmp_path):
    """Every image in report.html went through the blur: a detected box is smooth in the written
    photo, the rest of the photo is the photo (up to JPEG loss)."""
    import carcheck.report.privacy as privacy
    from carcheck.pipeline.build import build_report
    from carcheck.report.html import write_report
    from carcheck.schema import AssessConfig

    box = (40, 30, 40, 30)
    monkeypatch.setattr(privacy, "detect_private_regions", lambda image: [PrivateRegion("face", box, 0.9)])
    yy, xx = np.mgrid[:120, :160]
    img = np.repeat((((yy // 8 + xx // 8) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)  # 8 px checkerboard

    class V:
        image = img
        part_label = np.zeros(img.shape[:2], np.uint8)
        damage_label = np.zeros(img.shape[:2], np.uint8)
        gradcam = None

    photo = PhotoReport(path="a.jpg", status="assessed", width=160, height=120)
    rep = build_report(case_id="p", files=1, photos=[photo], findings=[], config=AssessConfig(), models={},
                       taxonomies={"parts": "dsmlr_parts", "damage": "damage_type"})
    html = write_report(rep, {"a.jpg": V()}, tmp_path)["html"].read_text()
    uri = html.split('src="data:image/jpeg;base64,')[1].split('"')[0]
    written = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")).astype(float)
    x, y, w, h = box
    err = np.abs(written - img).mean(axis=2)
    mask = np.zeros(img.shape[:2], bool)
    mask[y - 6:y + h + 6, x - 6:x + w + 6] = True
    assert written[y:y + h, x:x + w].std() < 0.5 * img[y:y + h, x:x + w].std()  # blurred in the report
    assert err[~mask].mean() < 0.6 * err[y:y + h, x:x + w].mean()  # elsewhere closer to the photo


# ------------------------------------------------------------------ damage filter verdict table
@pytest.mark.parametrize("p_damaged, has_damage, verdict", [
    (0.05, False, "clean"),           # filter: undamaged (1 - p = 0.95 > 0.9), nothing segmented
    (0.05, True, "no damage?"),       # filter: undamaged, damage segmented -> flagged
    (0.95, False, "damage missed?"),  # filter: damaged (0.95 > 0.9), nothing segmented -> flagged
    (0.95, True, "agrees"),           # both see damage
    (0.50, False, "agrees"),          # filter unsure, nothing segmented
    (0.50, True, "agrees"),           # filter unsure, damage segmented
    (0.10, False, "agrees"),          # 1 - p = 0.90 is not > 0.90: not clean
    (0.90, False, "agrees"),          # p = 0.90 is not > 0.90: not missed
])
def test_damage_filter_verdict_table(p_damaged, has_damage, verdict):
    assert checks.damage_filter_verdict(p_damaged, has_damage, 0.9, 0.9) == verdict
    reason = review.damage_filter_reason(verdict, p_damaged)
    assert (reason is not None) == (verdict in ("no damage?", "damage missed?"))


def test_filter_thresholds_are_the_configs():
    assert checks.damage_filter_verdict(0.15, False, 0.8, 0.9) == "clean"  # 0.85 > 0.8
    assert checks.damage_filter_verdict(0.85, False, 0.9, 0.8) == "damage missed?"


# ------------------------------------------------------------------ severity gate, OOD, presence
@pytest.mark.parametrize("has_damage, p_damaged, applies", [
    (True, None, True), (True, 0.1, True), (False, 0.6, True), (False, 0.5, False), (False, 0.2, False),
    (False, None, False)])
def test_severity_gate(has_damage, p_damaged, applies):
    assert checks.severity_applies(has_damage, p_damaged, 0.5) is applies


@pytest.mark.parametrize("max_logit, out", [(-1.5, True), (-1.4206, False), (-1.40, False)])
def test_ood_rule_is_strictly_below_the_threshold(max_logit, out):
    assert checks.ood_out_of_scope(max_logit, -1.4206) is out


def test_presence_gate_head_decides_alone_else_the_fallback_or_rule():
    # head: only P(vehicle) counts, however large the ImageNet score or coverage
    assert "presence head P(vehicle) 0.400 < 0.50" in checks.presence_skip_reason(0.4, 0.5, 0.9, 0.9, 0.035, 0.25)
    assert checks.presence_skip_reason(0.6, 0.5, 0.0, 0.0, 0.035, 0.25) is None
    # fallback: vehicle score OR part coverage
    assert checks.presence_skip_reason(None, 0.5, 0.04, 0.0, 0.035, 0.25) is None
    assert checks.presence_skip_reason(None, 0.5, 0.0, 0.3, 0.035, 0.25) is None
    r = checks.presence_skip_reason(None, 0.5, 0.01, 0.1, 0.035, 0.25)
    assert r.startswith("no vehicle: presence score 0.010 < 0.035") and "coverage 0.10 < 0.25" in r


# ------------------------------------------------------------------ K_agree and C_refined
def test_k_agree_and_c_refined_on_three_photos_with_unassigned():
    """Three photos: the door is visible in a and b, dented in a only; a scratch on no part shows in
    b and c; the hood's dent shows in all photos that show the hood."""
    a = PhotoFindings("a.jpg", {"door", "hood"}, {("door", "dent"): (0.8, 0.1, "medium"),
                                                  ("hood", "dent"): (0.9, 0.3, "large")})
    b = PhotoFindings("b.jpg", {"door", "hood"}, {("unassigned", "scratch"): (0.6, 0.01, "small"),
                                                  ("hood", "dent"): (0.7, 0.2, "medium")})
    c = PhotoFindings("c.jpg", {"trunk"}, {("unassigned", "scratch"): (0.9, 0.02, "small")})
    f = {(x.part, x.damage): x for x in reconcile([a, b, c], review_threshold=0.5)}
    assert set(f) == {("door", "dent"), ("hood", "dent"), ("unassigned", "scratch")}
    door = f[("door", "dent")]
    assert door.k_agree == pytest.approx(1 / 2) and door.c_base == pytest.approx(0.8)
    assert door.c_refined == pytest.approx(0.4) and door.needs_review and door.photos == ["a.jpg"]
    assert door.review_reasons == ["C_refined 0.40 < 0.50", "not seen in 1 of 2 photos showing the part"]
    hood = f[("hood", "dent")]
    assert hood.k_agree == 1.0 and hood.c_refined == pytest.approx(0.9) and not hood.needs_review
    assert hood.review_reasons == [] and hood.size_class == "large" and hood.area_fraction == pytest.approx(0.3)
    un = f[("unassigned", "scratch")]  # K_agree over all assessed photos: 2 of 3
    assert un.k_agree == pytest.approx(2 / 3) and un.c_base == pytest.approx(0.9)
    assert un.c_refined == pytest.approx(0.6) and un.needs_review  # above the threshold, still on no part
    assert "damage not on a segmented part" in un.review_reasons
    # sorted by C_refined, highest first
    assert [x.part for x in reconcile([a, b, c], 0.5)] == ["hood", "unassigned", "door"]


def test_an_implausible_region_flags_its_finding():
    a = PhotoFindings("a.jpg", {"wheel"}, {("wheel", "dent"): (0.95, 0.2, "medium")},
                      {("wheel", "dent"): [review.implausible_reason("wheel", "dent")]})
    (f,) = reconcile([a], 0.5)
    assert f.c_refined == pytest.approx(0.95) and f.needs_review
    assert f.review_reasons == ["implausible: dent on wheel (no plausible part touches the region)"]


# ------------------------------------------------------------------ identity
def _cosine(a, b):
    return 1 - (a * b).sum(1)


def test_a_photo_of_another_car_is_flagged():
    """Embeddings of three photos of one car (near one direction) and one of another car
    (orthogonal): only the other car is flagged, with its reason, against a photo of the majority."""
    rng = torch.Generator().manual_seed(0)
    car = torch.nn.functional.normalize(torch.randn(16, generator=rng), dim=0)
    v = torch.randn(16, generator=rng)
    other = torch.nn.functional.normalize(v - (v @ car) * car, dim=0)  # orthogonal to car: distance 1
    same = [torch.nn.functional.normalize(car + 0.05 * torch.randn(16, generator=rng), dim=0) for _ in range(3)]
    names = ["a.jpg", "b.jpg", "other.jpg", "c.jpg"]
    res = same_vehicle_check(names, torch.stack([same[0], same[1], other, same[2]]), _cosine, 0.5)
    assert res.consistency.different_vehicle == ["other.jpg"]
    assert res.consistency.reference in ("a.jpg", "b.jpg", "c.jpg") and res.consistency.checked_photos == 4
    assert not res.matches["other.jpg"].same_vehicle and res.matches["other.jpg"].distance > 0.8
    assert all(res.matches[n].same_vehicle for n in ("a.jpg", "b.jpg", "c.jpg"))
    photo = PhotoReport(path="other.jpg", status="assessed", vehicle_match=res.matches["other.jpg"])
    reasons = review.photo_review_reasons(photo, 0.5, 0)
    d = res.matches["other.jpg"].distance
    assert reasons == [f"different vehicle? (distance {d:.2f} > 0.50 to {res.consistency.reference})"]
    ok = PhotoReport(path="a.jpg", status="assessed", vehicle_match=res.matches["a.jpg"])
    assert review.photo_review_reasons(ok, 0.5, 0) == []


def test_make_model_vote_averages_the_in_scope_photos():
    classes = ["Audi_A4_2012", "Audi_S4_2012", "BMW_M3_2012"]
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.0001, 0.0001, 0.9998]]))
    v = make_model_vote(logits, classes, [True, True, False])  # the third photo is out of scope
    assert [c.label for c in v.make_model_top3] == ["Audi_A4_2012", "BMW_M3_2012", "Audi_S4_2012"]
    assert v.make_model_top3[0].probability == pytest.approx(0.4, abs=1e-4)
    assert [(c.label, round(c.probability, 2)) for c in v.make_top3] == [("Audi", 0.65), ("BMW", 0.35)]
    assert v.in_scope and v.known_models == 3
    assert not make_model_vote(logits, classes, [True, False, False]).in_scope  # 1 of 3 is no majority


# ------------------------------------------------------------------ review of a photo
def test_photo_review_reasons_in_order():
    det = PhotoDetection(part="wheel", damage="dent", area_px=10, area_fraction_of_part=0.1,
                         area_fraction_of_image=0.01, size_class="medium", c_base=0.9, bbox_xywh=[0, 0, 1, 1],
                         review_reasons=["implausible: dent on wheel (no plausible part touches the region)"])
    p = PhotoReport(path="x.jpg", status="assessed", detections=[det, det],
                    damage_filter=DamageFilter(probability_damaged=0.02, verdict="no damage?"),
                    vehicle_match=VehicleMatch(distance=0.9, same_vehicle=False, reference="/case/ref.jpg"))
    r = review.photo_review_reasons(p, 0.8, 2)
    assert r == ["damage filter calls the photo undamaged (P = 0.98) but damage was segmented",
                 "different vehicle? (distance 0.90 > 0.80 to ref.jpg)",
                 "implausible: dent on wheel (no plausible part touches the region)",
                 "2 finding(s) seen in this photo need review"]
    assert review.image_level_reasons(p, 0.8) == r[:2]  # the photos Grad-CAM is drawn for
    p.damage_filter = DamageFilter(probability_damaged=0.5, verdict="agrees")
    p.vehicle_match = VehicleMatch(distance=0.1, same_vehicle=True, reference="/case/ref.jpg")
    assert review.image_level_reasons(p, 0.8) == []


# ------------------------------------------------------------------ sizes in the photo's own pixels
class _FakeHeads:
    """No image-level head installed."""

    files: dict = {}
    paths: dict = {}

    def has(self, task):
        return False

    def state_tasks(self):
        return []

    def probability(self, *a):
        return None


def _bare_assessor(monkeypatch, parts_label, damage_label):
    """An Assessor without model files: predict() returns hand-made maps at "network" size."""
    from carcheck.pipeline.assess import Assessor
    from carcheck.pipeline.image_heads import PhotoHeadOutputs
    from carcheck.pipeline.inputs import DuplicateFinder
    from carcheck.pipeline.runner import Prediction
    from carcheck.schema import AssessConfig

    a = Assessor.__new__(Assessor)
    a.config = AssessConfig()
    a.part_names, a.damage_names = ["door", "hood"], ["dent", "scratch"]
    a.plausibility, a.heads, a.precision = None, _FakeHeads(), "fp32"
    a._duplicates = DuplicateFinder(a.config.duplicate_max_distance)

    def one_hot(label, n):
        p = np.full((n, *label.shape), 0.01, np.float32)
        for c in range(n):
            p[c][label == c] = 0.98
        return p

    def predict(image, gate=True):
        x = torch.zeros(1, 3, *parts_label.shape)
        return Prediction(x, 0.9, None, PhotoHeadOutputs(), one_hot(parts_label, 3), one_hot(damage_label, 3), None)

    monkeypatch.setattr(a, "predict", predict)
    return a


def test_bbox_and_area_rescaled_to_the_photo_pixels(monkeypatch):
    """Maps of 50 x 100 px (h x w) for a photo decoded at 200 x 300 px whose file is 600 x 600 px:
    area and box are given in the file's own pixels (x 6 wide, x 12 high, x 72 in area; unequal
    factors, so that a swapped or shared x/y factor shows)."""
    from carcheck.data.images import DecodedImage

    parts = np.zeros((50, 100), np.int64)
    parts[:, :60] = 1
    dmg = np.zeros((50, 100), np.int64)
    dmg[10:20, 20:40] = 1  # a 10 x 20 px dent at x=20, y=10 on the door
    a = _bare_assessor(monkeypatch, parts, dmg)
    decoded = DecodedImage(_noise(200, 300, seed=3), width=600, height=600, format="JPEG")
    rep, fnd, vis = a.screen_photo(Path("photo.jpg"), decoded)
    assert rep.status == "assessed", rep.reason
    assert (rep.width, rep.height) == (600, 600)
    (d,) = rep.detections
    assert (d.part, d.damage) == ("door", "dent")
    assert d.bbox_xywh == [120.0, 120.0, 120.0, 120.0]  # (20, 10, 20, 10) x (6, 12, 6, 12)
    assert d.area_px == pytest.approx(200 * 72)
    assert d.area_fraction_of_part == round(200 / 3000, 4) and d.area_fraction_of_image == round(200 / 5000, 5)
    assert fnd.findings[("door", "dent")][1] == pytest.approx(200 / 3000)
    assert vis.part_label.shape == (50, 100)  # the HTML draws at network size


def test_to_photo_pixels_does_nothing_when_sizes_agree():
    from carcheck.pipeline.size import to_photo_pixels

    det = PhotoDetection(part="door", damage="dent", area_px=100, area_fraction_of_part=0.1,
                         area_fraction_of_image=0.01, size_class="medium", c_base=0.9, bbox_xywh=[1, 2, 3, 4])
    rep = PhotoReport(path="x", status="assessed", width=100, height=50, detections=[det])
    to_photo_pixels(rep, 100, 50)
    assert det.area_px == 100 and det.bbox_xywh == [1, 2, 3, 4]
    to_photo_pixels(rep, 300, 100)  # x 3 wide, x 2 high
    assert (rep.width, rep.height) == (300, 100) and det.area_px == 600 and det.bbox_xywh == [3, 4, 9, 8]
