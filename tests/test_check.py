"""dataset check on real sets and on broken copies the tests make."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from carcheck.cli import app
from carcheck.data.check import check_dataset, dataset_stats

from conftest import data_path

runner = CliRunner()


@pytest.fixture()
def lplenka_copy(tmp_path):
    src = data_path("car_damage/coco_car_damage_lplenka")
    dst = tmp_path / "lplenka"
    shutil.copytree(src, dst)
    return dst


def _codes(report):
    return {p.code for p in report.errors}


def test_real_car_parts_passes_and_stats_has_cardd_buckets():
    root = data_path("car_parts")
    r = runner.invoke(app, ["dataset", "check", str(root), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["images_checked"] == 485 and report["errors"] == 0
    s = runner.invoke(app, ["dataset", "stats", str(root), "--json"])
    assert s.exit_code == 0
    stats = json.loads(s.stdout)
    test = next(x for x in stats["sources"] if x["split"] == "testset")
    wheel = next(c for c in test["classes"] if c["class"] == "wheel")
    assert wheel["instances"] == 94 and wheel["small"] + wheel["medium"] + wheel["large"] == 94


def test_real_lensor_reports_its_cross_split_duplicates():
    r = check_dataset(data_path("car_damage/lensor_severity"))
    dups = [p for p in r.errors if p.code == "near_duplicate_across_splits"]
    assert dups and _codes(r) == {"near_duplicate_across_splits"}
    # PROVENANCE.md: 12 val images and 1 test image are train photos under other names
    assert 8 <= len(dups) <= 20
    assert any("54_jpg" in p.path and "val/54_jpg" in p.message for p in dups)


def test_deleted_image_is_named(lplenka_copy):
    (lplenka_copy / "train" / "10.jpg").unlink()
    r = runner.invoke(app, ["dataset", "check", str(lplenka_copy), "--no-duplicates", "--json"])
    assert r.exit_code == 1
    probs = json.loads(r.stdout)["problems"]
    assert any(p["code"] == "missing_image" and p["path"].endswith("train/10.jpg") for p in probs)


def test_bad_category_id_and_unknown_image(lplenka_copy):
    p = lplenka_copy / "train" / "COCO_merged_annos.json"
    d = json.loads(p.read_text())
    d["annotations"][0]["category_id"] = 999
    d["annotations"][1]["image_id"] = 123456
    p.write_text(json.dumps(d))
    r = check_dataset(lplenka_copy, duplicates=False)
    assert {"unknown_category", "unknown_image"} <= _codes(r)
    assert any("999" in x.message for x in r.errors)


def test_degenerate_polygon_and_size_mismatch(lplenka_copy):
    p = lplenka_copy / "train" / "COCO_merged_annos.json"
    d = json.loads(p.read_text())
    d["annotations"][0]["segmentation"] = [[1, 1, 2, 2]]
    d["images"][0]["width"] = 999
    p.write_text(json.dumps(d))
    r = check_dataset(lplenka_copy, duplicates=False)
    assert {"degenerate_polygon", "size_mismatch"} <= _codes(r)


def test_duplicate_across_splits_is_found(lplenka_copy):
    # copy a training photo into val under another name, mirrored
    from PIL import Image
    Image.open(lplenka_copy / "train" / "10.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(lplenka_copy / "val" / "dup.jpg")
    for name in ("COCO_merged_annos.json", "COCO_val_annos.json", "COCO_mul_val_annos.json"):
        p = lplenka_copy / "val" / name
        d = json.loads(p.read_text())
        d["images"].append({"id": 9999, "file_name": "dup.jpg", "width": 1024, "height": 1024})
        p.write_text(json.dumps(d))
    r = check_dataset(lplenka_copy)
    assert any(p.code == "near_duplicate_across_splits" and "dup.jpg" in (p.path + p.message) and "10.jpg" in (p.path + p.message)
               for p in r.errors)


def test_corrupt_image_in_folder_set_and_empty_folder(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "set" / c).mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "set" / "a" / "ok.png")
    (tmp_path / "set" / "b" / "bad.jpg").write_text("not a jpeg")
    r = check_dataset(tmp_path / "set")
    assert any(p.code == "unreadable_image" and p.path.endswith("bad.jpg") for p in r.errors)
    (tmp_path / "empty").mkdir()
    e = runner.invoke(app, ["dataset", "check", str(tmp_path / "empty")])
    assert e.exit_code == 1 and "no_dataset" in e.output
    m = runner.invoke(app, ["dataset", "check", str(tmp_path / "missing")])
    assert m.exit_code == 2


def test_stats_of_folder_and_pairs_sets():
    s = dataset_stats(data_path("car_models/stanford_cars_subset32")).to_dict()
    assert len(s["sources"]) == 1 and len(s["sources"][0]["classes"]) == 32 and s["sources"][0]["images"] == 1165
    p = dataset_stats(data_path("verification/vn_traffic_reid_2cam")).to_dict()
    assert {c["class"]: c["pairs"] for c in p["sources"][0]["classes"]} == {"same": 483, "different": 483}
