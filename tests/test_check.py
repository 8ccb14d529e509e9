"""dataset check on real sets and on broken copies the tests make."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from carcheck.cli import app
from carcheck.data.check import check_dataset
from carcheck.data.stats import dataset_stats

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


# ---------------------------------------------------------------- malformed annotation and CSV files (issue 20)
def _small_coco(tmp_path):
    """A real 2-photo COCO set (lplenka val photos and annotations): the base the malformed files edit."""
    src = data_path("car_damage/coco_car_damage_lplenka") / "val"
    d = json.loads((src / "COCO_val_annos.json").read_text())
    ims = d["images"][:2]
    d["images"] = ims
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] in {i["id"] for i in ims}][:3]
    root = tmp_path / "set"
    (root / "val").mkdir(parents=True)
    for im in ims:
        shutil.copy(src / im["file_name"], root / "val" / im["file_name"])
    return root, d


_EDITS = {  # name -> (edit of the parsed file, JSON path the problem must name)
    "string_image_id": (lambda d: d["images"][0].update(id="0"), "images[0].id"),
    "string_annotation_id": (lambda d: d["annotations"][1].update(id="7"), "annotations[1].id"),
    "null_images": (lambda d: d.update(images=None), "images"),
    "annotations_object": (lambda d: d.update(annotations={}), "annotations"),
    "image_entry_list": (lambda d: d["images"].__setitem__(1, [1, 2]), "images[1]"),
    "null_file_name": (lambda d: d["images"][0].update(file_name=None), "images[0].file_name"),
    "missing_file_name": (lambda d: d["images"][1].pop("file_name"), "images[1].file_name"),
    "float_width": (lambda d: d["images"][0].update(width=1024.5), "images[0].width"),
    "string_height": (lambda d: d["images"][0].update(height="1024"), "images[0].height"),
    "bool_category_id": (lambda d: d["annotations"][0].update(category_id=True), "annotations[0].category_id"),
    "category_name_number": (lambda d: d["categories"][0].update(name=5), "categories[0].name"),
    "bbox_three_numbers": (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotations[0].bbox"),
    "bbox_nan": (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), "annotations[0].bbox[2]"),
    "bbox_negative": (lambda d: d["annotations"][2].update(bbox=[1, 2, -3, 4]), "annotations[2].bbox"),
    "segmentation_string": (lambda d: d["annotations"][0].update(segmentation="abc"), "annotations[0].segmentation"),
    "polygon_with_text": (lambda d: d["annotations"][0].update(segmentation=[[1, 2, "x", 4, 5, 6]]),
                          "annotations[0].segmentation"),
    "rle_bad_size": (lambda d: d["annotations"][0].update(segmentation={"counts": "ab", "size": [3]}),
                     "annotations[0].segmentation.size"),
    "iscrowd_string": (lambda d: d["annotations"][0].update(iscrowd="no"), "annotations[0].iscrowd"),
    "duplicate_image_id": (lambda d: d["images"][1].update(id=d["images"][0]["id"]), "images[1].id"),
    "duplicate_category_id": (lambda d: d["categories"].append(dict(d["categories"][0])), "categories[1].id"),
}

_RAW = {  # name -> (file bytes, words of the error)
    "deep_nesting": (b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b', "annotations": [], "categories": []}',
                     "nested too deeply"),
    "not_utf8": (b'{"images": [], "annotations": [{"id": 1, "name": "\xff\xfe"}], "categories": []}', "not UTF-8"),
    "truncated": (b'{"images": [{"id": 1, "file_name": "a.jpg"', "not valid JSON"),
    "top_level_list": (b'["images", "annotations", "categories"]', "not a COCO instances file"),
    "nan_literal_width": (b'{"images": [{"id": 1, "file_name": "a.jpg", "width": NaN}], "annotations": [], '
                          b'"categories": []}', "images[0].width"),
}


@pytest.mark.parametrize("name", sorted(_EDITS))
def test_malformed_coco_field_is_reported_with_its_json_path(tmp_path, name):
    root, d = _small_coco(tmp_path)
    edit, where = _EDITS[name]
    edit(d)
    (root / "val" / "instances_val.json").write_text(json.dumps(d))
    r = runner.invoke(app, ["dataset", "check", str(root), "--no-duplicates", "--json"])
    assert r.exit_code == 1, (r.output, r.exception)  # problems found; a crash would exit 3 (or raise here)
    probs = json.loads(r.stdout)["problems"]
    assert any(p["code"] == "schema" and p["message"].startswith(where + ":") for p in probs), probs


@pytest.mark.parametrize("name", sorted(_RAW))
def test_unreadable_coco_file_is_a_clear_error(tmp_path, name):
    data, words = _RAW[name]
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "instances_x.json").write_bytes(data)
    r = runner.invoke(app, ["dataset", "check", str(tmp_path / "set"), "--json"])
    assert r.exit_code == 1, (r.output, r.exception)
    probs = json.loads(r.stdout)["problems"]
    assert any(words in p["message"] and p["path"].endswith("instances_x.json") for p in probs), probs


def test_schema_accepts_every_real_coco_file():
    from carcheck.data.coco import find_coco_files
    from carcheck.data.coco_schema import coco_schema_problems

    files = find_coco_files(data_path("car_parts")) + find_coco_files(data_path("car_damage"))
    assert len(files) >= 9
    for f in files:
        assert coco_schema_problems(json.loads(f.read_text())) == [], f


_CSV = {  # name -> (CSV text or bytes, words of the error incl. the line)
    "short_row": ("file,label,source\na.jpg,damaged,x\nb.jpg\n", ":3: 1 field(s), the header has 3"),
    "long_row": ("file,label\na.jpg,dam,aged\n", ":2: 3 field(s), the header has 2"),
    "unterminated_quote": ('file,label\na.jpg,"damaged\nb.jpg,undamaged\n', ":2: malformed CSV"),
    "over_long_field": ("file,label\na.jpg," + "x" * 200_000 + "\n", ":2: malformed CSV"),
    "nul_byte": ("file,label\na.jpg,dam\0aged\n", ":2: a field holds a NUL byte"),
    "not_utf8": (b"file,label\na.jpg,\xff\xfe\n", "not UTF-8"),
    "missing_label_column": ("file,labels\na.jpg,damaged\n", "lacks the column(s) label"),
    "empty": ("", "empty file"),
    "bad_split": ("file,label,split\na.jpg,damaged,holdout\n", ":2: split 'holdout'"),
}


@pytest.mark.parametrize("name", sorted(_CSV))
def test_malformed_label_csv_exits_2_naming_file_and_line(tmp_path, name):
    from carcheck.models.classifier import SHIPPED_CLASSIFIERS

    text, words = _CSV[name]
    f = tmp_path / "labels.csv"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    r = runner.invoke(app, ["evaluate", "classifier", str(SHIPPED_CLASSIFIERS["damaged"]), str(f), "--split", "all"])
    assert r.exit_code == 2, (r.output, r.exception)
    out = " ".join(r.output.split())
    assert "labels.csv" in out and words in out, out


def test_malformed_pairs_csv_is_a_problem_not_a_crash(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "pairs.csv").write_text("file_a,file_b,same_vehicle\na.jpg,b.jpg\n")
    r = check_dataset(tmp_path / "set")
    assert any(p.code == "bad_pairs_file" and ":2:" in p.message for p in r.errors), r.problems


def test_yolo_split_may_list_folders_and_a_bad_split_is_an_error(tmp_path):
    from PIL import Image
    from carcheck.data.yolo import YoloFormatError, YoloSource

    for sub in ("a", "b"):
        (tmp_path / "images" / sub).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / sub / f"{sub}.jpg")
    (tmp_path / "data.yaml").write_text("names: [dent]\ntrain: [images/a, images/b]\n")
    assert [p.name for p in YoloSource(tmp_path / "data.yaml").splits["train"]] == ["a.jpg", "b.jpg"]
    (tmp_path / "data.yaml").write_text("names: [dent]\ntrain: {images: 1}\n")
    with pytest.raises(YoloFormatError, match="split 'train' must be a folder path"):
        YoloSource(tmp_path / "data.yaml")
