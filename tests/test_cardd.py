"""CarDD in carcheck: YOLO-seg folders read as COCO, instances scored from the shipped fusion's
regions, per-class AP as CarDD's Table V, the salient-object metrics of Table VIII."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carcheck.data.coco_dataset import CocoSegmentationDataset
from carcheck.data.yolo import YoloFormatError, annotation_file, coco_category_name, coco_file_for_yolo
from carcheck.evaluate.segmentation import SodAccumulator, coco_instance_ap
from carcheck.pipeline.photo import fusion_detections

from conftest import data_path


def _yolo_root(tmp_path, lines_by_image: dict[str, list[str]], size=(80, 40)):
    from PIL import Image

    root = tmp_path / "yolo"
    for split in ("train", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for stem, lines in lines_by_image.items():
            Image.new("RGB", size, (90, 90, 90)).save(root / split / "images" / f"{stem}.jpg")
            (root / split / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("path: .\ntrain: train/images\ntest: test/images\n"
                                    "names: ['crack', 'dent', 'glass shatter', 'lamp broken', 'scratch', 'tire flat']\n")
    return root


def test_yolo_polygons_become_coco_pixels_and_cardd_names(tmp_path):
    # a 0.5 x 0.5 square polygon of class 2 (glass shatter) and a box-only dent, on an 80 x 40 image
    root = _yolo_root(tmp_path, {"a": ["2 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75", "1 0.5 0.5 0.2 0.4"]})
    f = coco_file_for_yolo(root / "data.yaml", "test", cache_dir=tmp_path / "cache")
    coco = json.loads(f.read_text())
    assert [c["name"] for c in coco["categories"]][2] == "glass_shatter"
    poly, box = coco["annotations"]
    assert poly["category_id"] == 3 and poly["segmentation"][0] == [20.0, 10.0, 60.0, 10.0, 60.0, 30.0, 20.0, 30.0]
    assert poly["area"] == pytest.approx(40 * 20)
    assert box["bbox"] == pytest.approx([32.0, 12.0, 16.0, 16.0])
    ds = CocoSegmentationDataset([str(f)], "cardd_damage")
    _, mask, _ = ds.load(0)
    glass = 1 + ds.taxonomy.index("glass_shatter")
    dent = 1 + ds.taxonomy.index("dent")
    # the dent box lies inside the glass square; CarDD's priority rule paints glass (broken) over dent
    assert (mask == glass).sum() == pytest.approx(40 * 20, rel=0.1)
    assert (mask == dent).sum() == 0 and mask[0, 0] == 0


def test_converted_file_is_redone_when_labels_change(tmp_path):
    root = _yolo_root(tmp_path, {"a": ["4 0.1 0.1 0.3 0.1 0.3 0.3"]})
    f1 = coco_file_for_yolo(root / "data.yaml", "train", cache_dir=tmp_path / "c")
    (root / "train" / "labels" / "a.txt").write_text("4 0.1 0.1 0.3 0.1 0.3 0.3\n0 0.5 0.5 0.9 0.5 0.9 0.9\n")
    f2 = coco_file_for_yolo(root / "data.yaml", "train", cache_dir=tmp_path / "c")
    assert f1 != f2 and len(json.loads(f2.read_text())["annotations"]) == 2


def test_annotation_file_specs_and_errors(tmp_path):
    root = _yolo_root(tmp_path, {"a": ["4 0.1 0.1 0.3 0.1 0.3 0.3"]})
    assert "instances_test_" in annotation_file(f"{root}@test", "train").name
    assert "instances_train_" in annotation_file(str(root), "train").name
    with pytest.raises(KeyError, match="no split 'val'"):
        annotation_file(str(root), "val")
    with pytest.raises(FileNotFoundError, match="no such annotation file"):
        annotation_file(str(tmp_path / "nope.json"), "train")
    (root / "train" / "labels" / "a.txt").write_text("9 0.1 0.1 0.3 0.1 0.3 0.3\n")
    with pytest.raises(YoloFormatError, match=r"a\.txt:1: class id 9"):
        annotation_file(str(root), "train")


def test_category_names():
    assert coco_category_name("glass shatter") == "glass_shatter"
    assert coco_category_name(" Tire-Flat ") == "tire_flat"


def _probs(label: np.ndarray, n: int, p: float = 0.9) -> np.ndarray:
    out = np.full((n, *label.shape), (1 - p) / (n - 1), np.float32)
    for c in range(n):
        out[c][label == c] = p
    return out


def test_fusion_detections_are_the_fusion_regions_with_their_masks():
    dmg = np.zeros((60, 60), int)
    dmg[5:15, 5:15] = 1      # dent blob, 100 px
    dmg[30:50, 10:50] = 2    # scratch blob across two parts, 800 px
    parts = np.zeros((60, 60), int)
    parts[:, :30] = 1
    parts[:, 30:] = 2
    d = fusion_detections(_probs(dmg, 3), _probs(parts, 3), ["dent", "scratch"], ["door", "fender"])
    # the fusion splits the scratch at the part boundary: three regions, each mask exactly its pixels
    got = sorted((c, int(m.sum())) for c, m, _ in d)
    assert got == [(1, 100), (2, 400), (2, 400)]
    for c, m, s in d:
        assert (dmg[m] == c).all() and s == pytest.approx(0.9)
    # without a part model every region is one connected damage component
    d = fusion_detections(_probs(dmg, 3), None, ["dent", "scratch"])
    assert sorted((c, int(m.sum())) for c, m, _ in d) == [(1, 100), (2, 800)]
    # the fusion's minimum area (0.05 % of the photo) drops specks a plain component count keeps
    speck = np.zeros((200, 200), int)
    speck[0:3, 0:3] = 1
    assert fusion_detections(_probs(speck, 3), None, ["dent", "scratch"]) == []


def test_fusion_detections_apply_the_one_end_rule_as_the_assessment_does():
    """A rear view whose part map has a small hood patch inside the trunk: the assessment relabels the
    patch (pipeline.part_ends), so one scratch across it is ONE region, not split at a phantom hood."""
    from carcheck.schema import FusionConfig

    names = ["hood", "trunk"]
    parts = np.full((60, 60), 2)  # trunk
    parts[20:40, 20:30] = 1       # hood patch: 200 px vs 3,400 px of trunk (> 5x)
    dmg = np.zeros((60, 60), int)
    dmg[25:35, 10:50] = 1         # one scratch across the patch
    d = fusion_detections(_probs(dmg, 2), _probs(parts, 3), ["scratch"], names)
    assert [int(m.sum()) for _, m, _ in d] == [400]
    off = fusion_detections(_probs(dmg, 2), _probs(parts, 3), ["scratch"], names, FusionConfig(end_dominance=None))
    assert sorted(int(m.sum()) for _, m, _ in off) == [100, 100, 200]


def test_per_class_ap_follows_the_detections():
    h = w = 64
    m1 = np.zeros((h, w), bool)
    m1[4:20, 4:20] = True
    m2 = np.zeros((h, w), bool)
    m2[30:60, 30:60] = True
    gt = [(0, [(1, m1), (2, m2)])]
    # class 1 found exactly, class 2 missed (a detection of class 2 elsewhere)
    wrong = np.zeros((h, w), bool)
    wrong[0:3, 40:60] = True
    ap = coco_instance_ap(gt, [(0, 1, m1, 0.9), (0, 2, wrong, 0.8)], ["dent", "scratch"], {0: (h, w)})
    assert ap["segm"]["AP_dent"] == pytest.approx(1.0)
    assert ap["segm"]["AP_scratch"] == pytest.approx(0.0)
    assert ap["segm"]["AP"] == pytest.approx(0.5)


def test_sod_metrics_perfect_and_inverted_maps():
    gt = np.zeros((40, 40), bool)
    gt[10:30, 10:30] = True
    good, bad = SodAccumulator(), SodAccumulator()
    good.step(gt.astype(np.float32), gt)
    bad.step((~gt).astype(np.float32), gt)
    g, b = good.results(), bad.results()
    assert g["MAE"] == 0 and g["S_measure"] > 0.99 and g["F_beta_max"] > 0.99 and g["images"] == 1
    # inverted: at best the all-positive threshold, F_beta = 1.3 * 0.25 / (0.3 * 0.25 + 1) for a quarter-area object
    assert b["MAE"] == 1 and b["F_beta_max"] == pytest.approx(1.3 * 0.25 / 1.075, abs=0.01) and b["S_measure"] < 0.1


def test_shipped_cardd_test_split_reads_with_its_six_types():
    root = data_path("car_damage/cardd_roboflow")
    ds = CocoSegmentationDataset([str(annotation_file(str(root), "test"))], "cardd_damage")
    assert len(ds) == 298
    assert set(ds.category_map.values()) == set(ds.taxonomy.classes)


def test_built_train_valid_splits(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "data" / "cardd"
    if not (root / "train" / "images").is_dir():
        pytest.skip(f"CarDD train/valid not built in {root}: run ../shared/data/car_damage/cardd_roboflow/"
                    "build_train_valid.sh GIT_DIR data/cardd (see docs/cardd.md)")
    n = {s: len(list((root / d / "images").iterdir())) for s, d in (("train", "train"), ("val", "valid"))}
    assert n == {"train": 2788, "val": 793}


def test_shipped_cardd_model_applies_its_logit_adjustment(tmp_path):
    """The shipped file's ``logit_bias`` (chosen on CarDD valid, bench/calibration/cardd_calibrate.py) is added to
    the damage logits at every pass, and a bias that does not fit the head is refused."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from carcheck.models.inference import CARDD_SEGMENTER, load_segmenter

    with safe_open(str(CARDD_SEGMENTER), framework="pt") as f:
        meta = f.metadata()
    bias = json.loads(meta["logit_bias"])["damage"]
    m = load_segmenter(CARDD_SEGMENTER)
    assert m.taxonomies == {"damage": "cardd_damage"} and len(bias) == 7
    assert torch.allclose(m.logit_bias["damage"], torch.tensor(bias))
    feats = [torch.rand(1, c, 64 // s, 64 // s) for c, s in zip(m.backbone.channels, (4, 8, 16, 32))]
    with torch.no_grad():
        adjusted = m.decode(feats, (16, 16), ["damage"])["damage"]
        m.logit_bias = {}
        raw = m.decode(feats, (16, 16), ["damage"])["damage"]
    assert torch.allclose(adjusted - raw, torch.tensor(bias).view(1, -1, 1, 1).expand_as(raw), atol=1e-5)
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(CARDD_SEGMENTER)), str(bad), metadata={**meta, "logit_bias": json.dumps({"damage": [0.0] * 3})})
    with pytest.raises(ValueError, match="logit_bias of 'damage' does not fit"):
        load_segmenter(bad)
