"""carcheck assess on real photos, checked against ground truth, and on a folder of bad files."""

import json
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from carcheck.cli import app
from carcheck.data.taxonomy import get_mapping
from carcheck.evaluate.assessment import damaged_parts_ground_truth
from carcheck.models.inference import DEFAULT_SEGMENTERS

from conftest import data_path

runner = CliRunner()
pytestmark = pytest.mark.skipif(not all(p.exists() for p in DEFAULT_SEGMENTERS), reason="shipped segmenter weights missing")


@pytest.fixture(scope="module")
def assessor():
    from carcheck.pipeline.assess import Assessor
    return Assessor()


@pytest.fixture(scope="module")
def lplenka_case(assessor):
    val = data_path("car_damage/coco_car_damage_lplenka") / "val"
    report, visuals = assessor.assess(sorted(val.glob("*.jpg")), case_id="lplenka-val")
    return val, report, visuals


def test_lplenka_findings_match_ground_truth_damaged_parts(lplenka_case):
    val, report, _ = lplenka_case
    assert report.summary.photos == 9 and report.summary.failed == 0
    from carcheck.models.runtime import resolve_runtime
    # the precision and engine actually used are stated
    assert (report.config.precision, report.config.engine) == resolve_runtime("auto", "auto")
    assert report.summary.assessed >= 8, [(p.path, p.reason) for p in report.photos]
    mapping = get_mapping("dsmlr_parts", "lplenka_parts")
    gt = damaged_parts_ground_truth(val / "COCO_merged_annos.json")
    hits = total = 0
    for p in report.photos:
        if p.status != "assessed":
            continue
        pred = {mapping.map_name(d.part) for d in p.detections if d.part != "unassigned"} - {None}
        hits += len(gt[p.path] & pred)
        total += len(gt[p.path])
    assert total > 0
    # bench/cases.py measures the recall in full (68 lplenka one-photo cases: 0.63 of the damaged parts found by
    # any finding with the fine-tuned part and CarDD models shipped on 2026-12-01, 0.83 with the frozen ones before
    # them, which also drew damage on 71% of clean probe photos against 16% now); on these 9 photos 3 of 14 today.
    # The test guards against a broken fusion path (0 with every part unassigned), not the recall.
    assert hits / total >= 0.15, (hits, total)
    for f in report.findings:
        assert 0 <= f.c_refined <= f.c_base <= 1 and 0 < f.k_agree <= 1
        implausible = any(r.startswith("implausible") for r in f.review_reasons)
        assert f.photos and f.needs_review == (f.c_refined < report.config.review_threshold or f.part == "unassigned"
                                               or implausible)


def test_report_files_and_html_content(lplenka_case, tmp_path, assessor):
    from carcheck.report.html import write_report
    _, report, visuals = lplenka_case
    paths = write_report(report, visuals, tmp_path, assessor.part_names, assessor.damage_names)
    from carcheck.pipeline.runner import file_sha256
    from carcheck.schema import SCHEMA_VERSION, AssessConfig, CaseReport
    data = json.loads(paths["json"].read_text())
    assert data["schema_version"] == SCHEMA_VERSION and len(data["photos"]) == 9
    assert CaseReport.model_validate(data) == report  # the JSON reads back as the same report
    # the config is stated in full: every field of AssessConfig (fusion nested), auto resolved
    assert set(data["config"]) == set(AssessConfig.model_fields)
    assert set(data["config"]["fusion"]) == set(AssessConfig.model_fields["fusion"].default_factory().model_dump())
    assert data["config"]["precision"] in ("fp32", "bf16") and data["config"]["engine"] in ("torch", "onnx")
    assert AssessConfig.model_validate(data["config"]).model_copy(update={"precision": "auto", "engine": "auto",
                                                                        "threads": None}) == AssessConfig()
    files = {m["file"]: m["sha256"] for m in data["model_files"]}
    assert {w.name for w in DEFAULT_SEGMENTERS} <= set(files)
    for w in DEFAULT_SEGMENTERS:
        assert files[w.name] == file_sha256(w) and len(files[w.name]) == 64
    html = paths["html"].read_text()
    cams = sum(v.gradcam is not None for v in visuals.values())
    crops = html.count('<img class="crop"')  # the best photo's crop of each confident part (issue 16)
    assert crops == sum(not f.needs_review for f in report.parts)  # 0 here is possible (9 cars, one case)
    assert html.count("data:image/jpeg;base64,") == 3 * report.summary.assessed + cams + crops
    assert "Findings" in html and "K<sub>agree</sub>" in html
    assert html.count('<table class="instances">') == sum(bool(p.instances) for p in report.photos) > 0
    for name in assessor.damage_names:  # the legend lists the model's damage taxonomy
        assert f"</i>{name}</span>" in html


def test_every_detection_lies_in_a_damage_instance_and_parts_count_them(lplenka_case):
    """Issue 27 item 3 on real photos: each fusion region D_k lies inside one instance of its damage type on its
    part (instances are not split at part boundaries), and each per-part finding counts the instances of its
    types on it in the photo showing the most."""
    _, report, _ = lplenka_case
    seen = 0
    for p in report.photos:
        assert [i.id for i in p.instances] == list(range(1, len(p.instances) + 1))
        assert [i.area_px for i in p.instances] == sorted((i.area_px for i in p.instances), reverse=True)
        for d in p.detections:
            x, y, w, h = d.bbox_xywh
            inside = [i for i in p.instances if i.damage == d.damage and d.part in i.parts
                      and i.bbox_xywh[0] <= x + 0.2 and i.bbox_xywh[1] <= y + 0.2
                      and x + w <= i.bbox_xywh[0] + i.bbox_xywh[2] + 0.2 and y + h <= i.bbox_xywh[1] + i.bbox_xywh[3] + 0.2]
            if d.damage in report.config.fusion.instance_split_types:  # a dent region may lie on two split pieces
                assert any(i.damage == d.damage and d.part in i.parts for i in p.instances), (p.path, d)
                continue
            assert len(inside) == 1, (p.path, d)
            assert inside[0].area_px >= d.area_px - 0.5 and inside[0].photo == p.path
            seen += 1
    assert seen > 0
    by_path = {p.path: p for p in report.photos}
    for pf in report.parts:
        per_photo = [sum(i.damage in pf.damages and pf.part in i.parts for i in by_path[q].instances) for q in pf.photos]
        assert pf.instance_count == max(per_photo) >= 1 and len(pf.instances) == sum(per_photo)


def test_confident_parts_get_their_crop_in_the_html(tmp_path, assessor):
    """One-photo cases of lplenka photos (each a car of its own): the first with a confident part shows one crop
    per confident part (issue 16's handler-first page); bench/cases.py finds confident parts in most of them."""
    from carcheck.report.html import write_report
    photos = sorted((data_path("car_damage/coco_car_damage_lplenka") / "train").glob("*.jpg"))[:15]
    assert photos
    confident = 0
    for photo in photos:
        report, visuals = assessor.assess([photo], case_id=photo.stem)
        confident = sum(not f.needs_review for f in report.parts)
        if confident:
            break
    assert confident > 0, f"no confident part in {len(photos)} one-photo lplenka cases"
    html = write_report(report, visuals, tmp_path, assessor.part_names, assessor.damage_names)["html"].read_text()
    assert html.count('<img class="crop"') == confident


def test_mixed_folder_of_good_and_bad_files(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    src = data_path("car_parts") / "testset" / "JPEGImages"
    good = sorted(src.glob("*.jpg"))[:2]
    for g in good:
        shutil.copy(g, case / g.name)
    # a grey copy of good[0] would be skipped as its near duplicate: a third photo
    Image.open(sorted(src.glob("*.jpg"))[2]).convert("L").save(case / "gray.jpg")
    (case / "corrupt.jpg").write_bytes(good[1].read_bytes()[:2000])
    (case / "notes.jpg").write_text("this is a text file")
    Image.new("RGB", (1, 1)).save(case / "tiny.png")
    out = tmp_path / "out"
    r = runner.invoke(app, ["assess", str(case), "--out", str(out), "--case-id", "mixed"])
    assert r.exit_code == 1, r.output  # some photos failed
    rep = json.loads((out / "report.json").read_text())
    status = {p["path"].split("/")[-1]: (p["status"], p["reason"]) for p in rep["photos"]}
    assert status["corrupt.jpg"][0] == "failed" and "truncated" in status["corrupt.jpg"][1]
    assert status["notes.jpg"][0] == "failed" and "not an image" in status["notes.jpg"][1]
    assert status["tiny.png"][0] == "skipped" and "too small" in status["tiny.png"][1]  # before the models
    assert status["gray.jpg"][0] == "assessed"
    assert all(status[g.name][0] == "assessed" for g in good)
    assert rep["summary"]["failed"] == 2 and rep["case_id"] == "mixed"
    assert "notes.jpg" in (out / "report.html").read_text()


def test_photo_without_vehicle_is_skipped_with_its_score(tmp_path):
    import csv
    root = data_path("vehicle_presence/coco128")
    with open(root / "labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["has_vehicle"] == "0" and r["has_vehicle_incl_motorcycle"] == "0"]
    from carcheck import assess
    rep = assess([root / "images" / rows[0]["file"], root / "images" / rows[1]["file"]], case_id="no-car")
    assert all(p.status == "skipped" and p.vehicle_score is not None and "no vehicle" in p.reason for p in rep.photos)
    assert rep.summary.findings == 0


def test_image_level_heads_in_a_case(tmp_path, assessor):
    """One car from three Stanford photos of one model, a damaged lensor photo (another car),
    a photo without any vehicle: presence gate, damage filter, severity, make/model,
    the case's vehicle and the same-vehicle check all appear, Grad-CAM for flagged photos."""
    from carcheck.models.classifier import SHIPPED_CLASSIFIERS
    if not all(SHIPPED_CLASSIFIERS[t].is_file() for t in ("presence", "damaged", "make_model", "verification")):
        pytest.skip("shipped image-level heads missing")
    import csv
    coco = data_path("vehicle_presence/coco128")
    with open(coco / "labels.csv") as f:
        empty = next(coco / "images" / r["file"] for r in csv.DictReader(f) if r["has_vehicle_incl_motorcycle"] == "0")
    stanford = sorted((data_path("car_models/stanford_cars_subset32") / "Audi_S4_Sedan_2012").glob("*.jpg"))[:3]
    damaged = sorted((data_path("car_damage/lensor_severity") / "images/test").glob("*.jpg"))[0]
    report, visuals = assessor.assess([*stanford, damaged, empty], case_id="heads")
    by = {p.path: p for p in report.photos}
    skipped = by[str(empty)]
    assert skipped.status == "skipped" and "out of scope" in skipped.reason and skipped.presence_probability < 0.5
    for s in stanford:
        p = by[str(s)]
        assert p.status == "assessed" and p.presence_probability > 0.5
        assert p.damage_filter is not None and p.car_state["damaged"].label in ("damaged", "undamaged")
        assert p.make_model is not None and len(p.make_model.top) == 3
    d = by[str(damaged)]
    assert d.damage_filter.probability_damaged > 0.5 and "severity" in d.car_state
    assert d.car_state["severity"].label in ("minor", "moderate", "severe")
    assert report.vehicle is not None and len(report.vehicle.make_model_top3) == 3
    assert abs(sum(c.probability for c in report.vehicle.make_top3)) <= 1.0 + 1e-6
    assert report.consistency is not None and report.consistency.checked_photos == 4
    assert all(by[str(s)].vehicle_match is not None for s in stanford)
    # the flag, the reason and the distance agree photo by photo (the rule itself, on hand-made
    # embeddings: tests/test_rules.py::test_a_photo_of_another_car_is_flagged). The shipped
    # verification model does not flag the lensor close-up of another car (its distance to the
    # Audi stays under the threshold): a limit of that model (measured), not asserted here.
    thr = report.consistency.threshold
    for p in report.photos:
        if p.vehicle_match is not None:
            flagged = p.path in report.consistency.different_vehicle
            assert flagged == (not p.vehicle_match.same_vehicle) == (p.vehicle_match.distance > thr)
            assert flagged == any(r.startswith("different vehicle?") for r in p.review_reasons), p.review_reasons
    assert all(by[str(s)].vehicle_match.same_vehicle for s in stanford)  # one car's three photos match
    image_flagged = {p.path for p in report.photos if p.status == "assessed" and any(
        "different vehicle" in r or "damage filter" in r for r in p.review_reasons)}
    assert image_flagged == {p.path for p in report.photos if p.gradcam}  # Grad-CAM exactly for image-level flags
    assert all(visuals[q].gradcam is not None for q in image_flagged)
    from carcheck.report.html import write_report
    html = write_report(report, visuals, tmp_path, assessor.part_names, assessor.damage_names)["html"].read_text()
    assert "Make/model (top 3)" in html and "damage filter" in html


def test_empty_folder(tmp_path):
    from carcheck import assess
    rep = assess([tmp_path], case_id="empty")
    assert rep.summary.photos == 0 and "No photos" in rep.summary.verdict


def test_fallback_gate_without_image_level_heads():
    """Without the presence head the ImageNet-score OR part-coverage rule gates, and the report has
    no image-level sections."""
    import csv
    root = data_path("vehicle_presence/coco128")
    with open(root / "labels.csv") as f:
        empty = next(root / "images" / r["file"] for r in csv.DictReader(f) if r["has_vehicle_incl_motorcycle"] == "0")
    car = sorted((data_path("car_parts") / "testset" / "JPEGImages").glob("*.jpg"))[0]
    from carcheck import assess
    rep = assess([empty, car], case_id="fallback", heads={})
    by = {p.path: p for p in rep.photos}
    assert by[str(empty)].status == "skipped" and by[str(empty)].reason.startswith("no vehicle: presence score")
    assert by[str(car)].status == "assessed" and by[str(car)].presence_probability is None
    assert by[str(car)].damage_filter is None and rep.vehicle is None and rep.consistency is None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_make_model_ood_rule_uses_the_threshold_of_the_precision_it_ran_in(assessor, precision):
    """A max logit halfway between the shipped head's fp32 and bf16 thresholds is out of scope under the
    precision whose threshold is the higher one, and kept under the other."""
    import torch

    from carcheck.pipeline.image_heads import PhotoHeadOutputs
    from carcheck.schema import PhotoReport

    if not (assessor.heads.has("make_model") and assessor.heads.has("make_model_ood")):
        pytest.skip("shipped make/model heads missing")
    info = assessor.heads.info("make_model_ood")
    thr = {p: info.ood_threshold(p) for p in ("fp32", "bf16")}
    assert abs(thr["fp32"] - thr["bf16"]) > 0.01, "the shipped head stores one threshold per precision"
    mid = (thr["fp32"] + thr["bf16"]) / 2
    out_of_scope = mid < thr[precision]
    n = len(info.classes)
    heads = PhotoHeadOutputs(logits={t: torch.zeros(len(assessor.heads.info(t).classes)) for t in assessor.heads.heads
                                     if assessor.heads.info(t).kind == "classifier"})
    heads.logits["make_model_ood"] = torch.full((n,), mid - 3.0)
    heads.logits["make_model_ood"][0] = mid
    rep = PhotoReport(path="x.jpg", status="assessed")
    saved = assessor.precision
    try:
        assessor.precision = precision
        assessor._image_level(rep, heads)
    finally:
        assessor.precision = saved
    assert rep.make_model.out_of_scope is out_of_scope and (rep.make_model.label is None) is out_of_scope
