"""Damage instances from the CenterNet head (issue 27): touching damages stay apart, instance counts are right,
the training targets and losses are CenterNet's, and `evaluate segmentation --instances-from head` scores them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carcheck.evaluate.segmentation import coco_instance_ap, components_as_detections
from carcheck.models.instances import CenterNetHead, HeadInstances, decode_centers, group_by_centres, masks_in_boxes
from carcheck.train.instances import centernet_loss, centernet_targets, focal_loss

from conftest import data_path

CLASSES = ("dent", "scratch", "crack", "glass_shatter", "lamp_broken", "tire_flat")


def _two_touching_dents(h=200, w=300):
    """Two dent rectangles sharing an edge (one connected component of the damage map) and their ground truth."""
    label = np.zeros((h, w), np.int64)
    label[50:150, 40:150] = 1
    label[60:140, 150:260] = 1
    a = np.zeros((h, w), bool)
    a[50:150, 40:150] = True
    b = np.zeros((h, w), bool)
    b[60:140, 150:260] = True
    return label, a, b


def _iou(m, g):
    return (m & g).sum() / (m | g).sum()


def test_two_touching_dents_stay_two_instances():
    label, a, b = _two_touching_dents()
    probs = np.stack([label == 0, label == 1, *([np.zeros_like(label, bool)] * 5)]).astype(np.float32)
    assert len(components_as_detections(probs)) == 1  # the damage map's components merge them
    found = masks_in_boxes(label, [(1, 0.9, (40, 50, 150, 150)), (1, 0.8, (150, 60, 260, 140))])
    assert len(found) == 2
    (c1, m1, s1, _), (c2, m2, s2, _) = found
    assert c1 == c2 == 1 and not (m1 & m2).any()
    assert _iou(m1, a) > 0.95 and _iou(m2, b) > 0.95
    # scored as CarDD scores them: two dents, both found (the merged component scores far lower)
    gt = [(0, [(1, a), (1, b)])]
    head_ap = coco_instance_ap(gt, [(0, c, m, s) for c, m, s, _ in found], CLASSES, {0: label.shape})
    comp_ap = coco_instance_ap(gt, [(0, 1, label == 1, 0.9)], CLASSES, {0: label.shape})
    assert head_ap["segm"]["AP75"] == 1.0 and comp_ap["segm"]["AP75"] == 0.0


def test_grouping_splits_a_merged_component_at_the_centres_only():
    label, a, b = _two_touching_dents()
    label[5:15, 5:15] = 2  # a scratch with no centre: stays one instance, scored by its mean probability
    probs = np.stack([label == c for c in range(7)]).astype(np.float32)
    dets = [(1, 0.9, (40, 50, 150, 150)), (1, 0.8, (150, 60, 260, 140)), (1, 0.05, (0, 0, 30, 30))]
    found = group_by_centres(label, probs, dets, min_peak=0.2)
    dents = [f for f in found if f[0] == 1]
    assert len(found) == 3 and len(dents) == 2
    assert _iou(dents[0][1], a) > 0.9 and _iou(dents[1][1], b) > 0.9 and not (dents[0][1] & dents[1][1]).any()
    assert [f[2] for f in found if f[0] == 2] == [1.0]
    # one centre in the merged component: it stays one instance, with the centre's score
    one = group_by_centres(label, probs, dets[:1], min_peak=0.2)
    assert [(f[0], int(f[1].sum()), f[2]) for f in one if f[0] == 1] == [(1, int((label == 1).sum()), 0.9)]


def test_a_box_keeps_only_the_components_under_it():
    label = np.zeros((300, 100), np.int64)
    label[10:40, 10:40] = 2  # the scratch the box is on
    label[0:300, 60:62] = 2  # a long scratch of which the box holds only 80 of 600 px
    (c, m, _, _), = masks_in_boxes(label, [(2, 0.7, (5, 5, 65, 45))], min_cover=0.2)
    assert m.sum() == 900 and m[10:40, 10:40].all()
    assert masks_in_boxes(label, [(3, 0.7, (5, 5, 65, 45))]) == []  # no pixels of its class: dropped
    (_, mb, _, _), = masks_in_boxes(label, [(3, 0.7, (5, 5, 65, 45))], empty="box")
    assert mb.sum() == 60 * 40


def _heat_with_peaks(peaks, classes=6, cells=20):
    """A head output with one sharp peak per ``(class, y, x)`` (scores 0.95, 0.94, ... in the given order), sizes
    4 x 2 cells, no offset."""
    heat = torch.full((1, classes, cells, cells), -9.0)
    for j, (c, y, x) in enumerate(peaks):
        heat[0, c, y, x] = 3.0 - 0.1 * j
    wh = torch.zeros(1, 2, cells, cells)
    wh[:, 0], wh[:, 1] = 4.0, 2.0
    return {"heat": heat, "wh": wh, "off": torch.zeros(1, 2, cells, cells)}


def test_instance_count_is_the_number_of_peaks():
    # two dents two cells apart (a 3x3 max-pool keeps both), a scratch on the same cell as one of them
    peaks = [(0, 5, 5), (0, 5, 7), (1, 5, 5), (5, 15, 12)]
    dets = decode_centers(_heat_with_peaks(peaks), threshold=0.5)
    assert len(dets) == 4
    assert sorted(d[0] for d in dets) == [1, 1, 2, 6]
    c, s, (x0, y0, x1, y1) = next(d for d in dets if d[0] == 6)
    assert (x0, y0, x1, y1) == (12 * 8 - 16, 15 * 8 - 8, 12 * 8 + 16, 15 * 8 + 8)
    assert decode_centers(_heat_with_peaks([]), threshold=0.5) == []


def test_head_instances_count_with_masks_end_to_end():
    head = CenterNetHead(in_channels=4, num_classes=6, width=8)
    peaks = [(0, 5, 5), (0, 5, 7)]
    runner = HeadInstances(head, threshold=0.5)
    runner.head = lambda x: _heat_with_peaks(peaks)  # a head that answers two touching dents
    label = np.zeros((160, 160), np.int64)
    label[32:52, 24:72] = 1  # one component under both boxes
    found = runner(torch.zeros(1, 4, 20, 20), label, (160, 160))
    assert len(found) == 2 and not (found[0][1] & found[1][1]).any()


def test_targets_and_focal_loss_are_centernets():
    t = centernet_targets([[[2, 80, 40, 160, 120]], []], cells=40)
    assert t["heat"].shape == (2, 6, 40, 40) and t["heat"][0, 1].max() == 1.0 and t["heat"][1].max() == 0
    assert t["heat"][0, 1, 10, 15] == 1.0  # centre (120, 80) px -> cell (10, 15)
    assert t["mask"].sum() == 1 and tuple(t["wh"][0, 0].tolist()) == (10.0, 10.0)
    # eq. 1: a perfect heatmap costs (almost) nothing, an empty one costs more than a wrong-class one costs less
    perfect = torch.where(t["heat"] == 1, torch.tensor(20.0), torch.tensor(-20.0))
    assert focal_loss(perfect, t["heat"]) < 1e-3 < focal_loss(torch.full_like(perfect, -20.0), t["heat"])
    out = {"heat": perfect, "wh": torch.zeros(2, 2, 40, 40), "off": torch.zeros(2, 2, 40, 40)}
    out["wh"][0, :, 10, 15], out["off"][0, :, 10, 15] = 10.0, t["off"][0, 0]
    assert float(centernet_loss(out, t)["loss"]) < 1e-3


def test_evaluate_segmentation_scores_head_instances(tmp_path):
    import json

    from carcheck.data.yolo import annotation_file
    from carcheck.evaluate.segmentation import evaluate_segmentation
    from carcheck.models.inference import CARDD_SEGMENTER, load_segmenter
    from carcheck.models.instances import INSTANCE_HEAD, load_instance_head

    if not INSTANCE_HEAD.is_file():
        pytest.skip(f"{INSTANCE_HEAD.name} not shipped")
    root = data_path("car_damage/cardd_roboflow")
    coco = json.loads(annotation_file(str(root), "test").read_text())
    coco["images"] = coco["images"][:2]
    ids = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    assert all(im["path"].startswith("/") for im in coco["images"])  # absolute: the copy may live in tmp_path
    f = tmp_path / "two.json"
    f.write_text(json.dumps(coco))
    torch.set_num_threads(2)
    res = evaluate_segmentation(load_segmenter(CARDD_SEGMENTER), [str(f)], "damage", instances=True,
                                instances_from="head", longest=640, instance_head=load_instance_head()).to_dict()
    assert res["instances_from"] == "head" and res["images"] == 2
    assert 0 <= res["instance_ap"]["segm"]["AP"] <= 1 and "AP_dent" in res["instance_ap"]["bbox"]
    assert res["instance_ms_per_photo"] > 0
    with pytest.raises(ValueError, match="damage"):
        evaluate_segmentation(load_segmenter(CARDD_SEGMENTER), [str(f)], "damage", "damage_binary", instances=True,
                              instances_from="head")


def test_cli_names_the_instance_kinds(tmp_path):
    from typer.testing import CliRunner

    from carcheck.cli import app

    r = CliRunner().invoke(app, ["evaluate", "segmentation", str(tmp_path), "--task", "damage", "--instances",
                                 "--instances-from", "boxes"])
    assert r.exit_code == 2 and "fusion, components or head" in r.output
    r = CliRunner().invoke(app, ["evaluate", "segmentation", "--help"])
    assert "head" in r.output
