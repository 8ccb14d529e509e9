"""Image-level heads: label tables and splits, recipes, the classifier / verification trainers
(SOCAR layout and its binary tasks included), metrics, shipped heads on real photos, Grad-CAM and
the case-consistency rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from carcheck.data.folder import FolderFormatError
from carcheck.data.labels import LabelRow, assign_splits, read_label_csv, read_labels, write_label_csv
from carcheck.evaluate.classifier import (classification_metrics, ood_auroc, ood_threshold, topk_accuracy,
                                          verification_metrics)
from carcheck.models.classifier import SHIPPED_CLASSIFIERS, EmbeddingHead, load_head
from carcheck.pipeline.consistency import case_consistency
from carcheck.train.classifier import class_alpha, classification_loss

from conftest import data_path


# ---------------------------------------------------------------- label tables and splits
def _rows(n_per=(10, 10, 4), groups=False):
    rows = []
    for c, n in zip("abc", n_per):
        for i in range(n):
            rows.append(LabelRow(Path(f"/x/{c}{i}.jpg"), c, "s", None, f"{c}{i // 2}" if groups else ""))
    return rows


def test_assign_splits_is_seeded_stratified_and_keeps_groups_together():
    rows = _rows(groups=True)
    a, b = assign_splits(rows, seed=3), assign_splits(list(reversed(rows)), seed=3)
    assert {r.path: r.split for r in a} == {r.path: r.split for r in b}  # depends on the files, not their order
    for c in "ab":  # every class with >= 3 units reaches val and test
        assert {r.split for r in a if r.label == c} == {"train", "val", "test"}
    by_group = {}
    for r in a:
        by_group.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in by_group.values())
    fixed = [LabelRow(Path("/x/t.jpg"), "a", "s", "test")] + _rows()
    assert assign_splits(fixed)[0].split == "test"  # an existing split is kept
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(rows, (0.5, 0.2, 0.2))


def test_label_csv_round_trip_and_errors(tmp_path):
    rows = assign_splits(_rows())
    p = write_label_csv(rows, tmp_path / "sub" / "labels.csv")
    back = read_label_csv(p)
    assert [(r.path.resolve(), r.label, r.split) for r in back] == [(r.path.resolve(), r.label, r.split) for r in rows]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,class\nx.jpg,a\n")
    with pytest.raises(FolderFormatError, match="bad.csv.*file,label"):
        read_label_csv(bad)
    bad.write_text("file,label,split\nx.jpg,a,holdout\n")
    with pytest.raises(FolderFormatError, match=r"bad.csv:2: split 'holdout'"):
        read_label_csv(bad)
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "missing.csv")


def test_recipes_on_shared_data_are_fixed_and_leak_free():
    root = data_path("vehicle_presence").parent
    from carcheck.data.recipes import PRESENCE_MIN_BOX_AREA, build_recipe

    presence = build_recipe("presence", root)
    assert {r.label for r in presence} == {"vehicle", "no_vehicle"}
    assert build_recipe("presence", root) == presence  # same split every time
    import csv
    coco = {r.path.name: r for r in presence if r.source == "coco128"}
    with open(root / "vehicle_presence/coco128/labels.csv") as f:
        for row in csv.DictReader(f):
            ambiguous = row["has_vehicle"] == "1" and float(row["max_vehicle_box_area"]) < PRESENCE_MIN_BOX_AREA
            assert (row["file"] in coco) != ambiguous
    assert all(r.split == "test" for r in presence if r.source == "car_parts" and "testset" in str(r.path))
    ver = build_recipe("verification", root)
    splits = {}
    for r in ver:
        splits.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in splits.values())  # a vehicle never straddles splits
    crops = build_recipe("part_crops", root)
    src = {}
    for r in crops:
        src.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in src.values())  # crops of one photo stay together


# ---------------------------------------------------------------- losses and metrics
def test_focal_alpha_and_loss():
    y = torch.tensor([0, 0, 0, 1])
    alpha = class_alpha(y, 3)
    assert torch.allclose(alpha, torch.tensor([4 / 9, 4 / 3, 1.0]))  # N / (C n_c); absent class -> 1
    logits = torch.randn(6, 3)
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    ce = classification_loss(logits, t, "ce")
    focal0 = classification_loss(logits, t, "focal", None, gamma=0.0)
    assert torch.allclose(ce, focal0, atol=1e-6)  # gamma = 0, no alpha: focal == CE
    assert classification_loss(logits, t, "focal", None, 2.0) < ce
    with pytest.raises(ValueError):
        classification_loss(logits, t, "hinge")


def test_classification_and_ood_metrics():
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b"])
    assert m["accuracy"] == 0.75 and m["confusion"] == [[1, 1], [0, 2]]
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and m["macro_recall"] == pytest.approx(0.75)
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [0, 1, 2]])
    assert topk_accuracy(logits, torch.tensor([1, 2, 0]), 1) == 0 and topk_accuracy(logits, torch.tensor([1, 2, 0]), 3) == 1
    assert ood_auroc([3, 4, 5], [0, 1, 2]) == 1.0
    t = ood_threshold([3, 4, 5, 6], [0, 1, 2])
    assert 2 < t <= 3
    v = verification_metrics([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])
    assert v["roc_auc"] == 1.0 and v["accuracy"] == 1.0 and v["eer"] == 0.0


def test_case_consistency_flags_the_odd_photo():
    head = EmbeddingHead(8, dim=4)
    with torch.no_grad():
        head.compare.weight.fill_(-10.0)
        head.compare.bias.fill_(3.0)
    same = torch.nn.functional.normalize(torch.tensor([1.0, 0, 0, 0]), dim=0)
    other = torch.nn.functional.normalize(torch.tensor([0.0, 1, 0, 0]), dim=0)
    emb = torch.stack([same, same, other, same])
    res = case_consistency(head, emb, threshold=0.5)
    assert res.same == [True, True, False, True] and res.distances[2] > 0.9
    two = case_consistency(head, torch.stack([same, other]), 0.5)
    assert two.same == [False, False] and "no majority" in two.note
    assert case_consistency(head, same[None], 0.5).same == [True]


# ---------------------------------------------------------------- trainers on real photos
@pytest.fixture(scope="module")
def socar_layout(tmp_path_factory):
    """A SOCAR-style folder tree (class folders named as in the paper's Table 1) filled with the
    photos there are: undamaged Stanford Cars (exterior_normal), damaged vds (exterior_defect),
    interior part crops standing in for interior_dirt_seat (no dirt photos are reachable here)."""
    root = tmp_path_factory.mktemp("socar")
    srcs = {
        "exterior_normal": sorted(data_path("car_models/stanford_cars_subset32").rglob("*.jpg"))[::60][:10],
        "exterior_defect": sorted(data_path("car_state/vds_damage_severity").rglob("*.jpg"))[::60][:10],
        "interior_dirt_seat": sorted(data_path("car_part_crops/compcars_style_interior_voc/crops").rglob("*.jpg"))[::10][:10],
    }
    for c, files in srcs.items():
        (root / c).mkdir()
        for f in files:
            shutil.copy(f, root / c / f.name)
    return root


def test_classifier_trainer_on_socar_layout_and_binary_tasks(socar_layout, tmp_path):
    from carcheck.data.taxonomy import TaxonomyError
    from carcheck.evaluate.classifier import evaluate_classifier
    from carcheck.train.classifier import ClassifierTrainConfig, train_classifier

    cache = str(tmp_path / "cache")
    logs = []
    for target, classes in (("socar_defect", ["normal", "defect"]), ("socar_dirt", ["clean", "dirty"])):
        cfg = ClassifierTrainConfig(data=str(socar_layout), task=target, out=str(tmp_path / target), taxonomy="socar_state",
                                    map_to=target, epochs=8, patience=3, cache_dir=cache, val_fraction=0.2,
                                    test_fraction=0.2)
        run = train_classifier(cfg, log=logs.append)
        head, info = load_head(run / "best.safetensors")
        assert info.classes == classes and info.task == target and info.ood["score"] == "max_logit"
        assert (run / "metrics.jsonl").read_text().count("\n") >= 1
        res = evaluate_classifier(run / "best.safetensors", socar_layout, split=None, cache_dir=cache)
        # the mapped labels are what is scored: defect <- exterior_defect; dirt drops exterior_defect
        assert res["n"] == (30 if target == "socar_defect" else 20)
        assert res["accuracy"] > 0.8, res["confusion"]  # easy, well-separated photo sources
    # resume: a finished run folder continues from last.pt instead of starting over
    cfg.epochs += 1
    train_classifier(cfg, log=logs.append)
    assert any("resumed" in m for m in logs)
    bad = ClassifierTrainConfig(data=str(socar_layout), task="x", out=str(tmp_path / "bad"), taxonomy="dsmlr_parts",
                                cache_dir=cache)
    with pytest.raises(TaxonomyError, match="exterior_defect"):
        train_classifier(bad)


def test_evaluate_classifier_rejects_labels_outside_the_head(socar_layout, tmp_path):
    from carcheck.evaluate.classifier import evaluate_classifier

    path = SHIPPED_CLASSIFIERS["severity"]
    if not path.is_file():
        pytest.skip("shipped severity head missing")
    with pytest.raises(ValueError, match="not classes of the head"):
        evaluate_classifier(path, socar_layout, split=None, cache_dir=str(tmp_path))


# ---------------------------------------------------------------- shipped heads on real photos
@pytest.mark.skipif(not SHIPPED_CLASSIFIERS["presence"].is_file(), reason="shipped presence head missing")
def test_shipped_presence_and_damage_heads_on_held_out_photos(backbone):
    from carcheck.data.images import load_image
    from carcheck.models.features import pooled_features

    def prob(task, path, label):
        head, info = load_head(SHIPPED_CLASSIFIERS[task])
        f = pooled_features(backbone, load_image(path))
        with torch.no_grad():
            return float(head.head(f).softmax(1)[0, info.classes.index(label)])

    cars = sorted((data_path("car_parts") / "testset/JPEGImages").glob("*.jpg"))[:3]
    assert all(prob("presence", p, "vehicle") > 0.5 for p in cars)
    import csv
    coco = data_path("vehicle_presence/coco128")
    with open(coco / "labels.csv") as f:
        empty = [coco / "images" / r["file"] for r in csv.DictReader(f) if r["has_vehicle"] == "0"][:3]
    assert all(prob("presence", p, "vehicle") < 0.5 for p in empty)
    lensor = sorted((data_path("car_damage/lensor_severity") / "images/test").glob("*.jpg"))[:3]
    assert sum(prob("damaged", p, "damaged") > 0.5 for p in lensor) >= 2


@pytest.mark.skipif(not SHIPPED_CLASSIFIERS["damaged"].is_file(), reason="shipped damage filter missing")
def test_grad_cam_map_is_spatial_and_normalised(backbone):
    from carcheck.data.images import load_image
    from carcheck.models.explain import grad_cam, overlay_cam
    from carcheck.models.inference import to_input_tensor

    img = load_image(sorted((data_path("car_damage/lensor_severity") / "images/test").glob("*.jpg"))[0])
    x = to_input_tensor(img, 256)
    head, info = load_head(SHIPPED_CLASSIFIERS["damaged"])
    cam = grad_cam(backbone, head, x, info.classes.index("damaged"))
    assert cam.shape == tuple(x.shape[-2:]) and cam.dtype == np.float32
    assert 0 <= cam.min() and cam.max() <= 1 and cam.std() > 0.01
    small = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    ov = overlay_cam(small, cam)
    assert ov.shape == small.shape and ov.dtype == np.uint8
    with pytest.raises(ValueError, match="one image"):
        grad_cam(backbone, head, torch.cat([x, x]), 0)


def test_verification_trainer_learns_identities(tmp_path):
    """A Siamese head trained on 60 vehicles separates their own pairs far better than chance;
    the file records the validation EER threshold; a non-image file is skipped, not fatal."""
    from carcheck.data.recipes import build_recipe
    from carcheck.train.embedding import EmbeddingTrainConfig, make_pairs, pair_distances, train_embedding
    from carcheck.models.features import FeatureCache
    import random

    rows = build_recipe("verification", data_path("verification").parent)
    cars = sorted({r.group for r in rows if r.source == "car"})[:60]
    keep = [r for r in rows if r.group in cars]
    bad = tmp_path / "car_9999_cam1.jpg"
    bad.write_text("not a photo")
    keep.append(LabelRow(bad, "car_9999", "car", "train", "car_9999"))
    csv_path = write_label_csv(keep, tmp_path / "ver.csv")
    logs = []
    cache = str(tmp_path / "cache")
    run = train_embedding(EmbeddingTrainConfig(data=str(csv_path), out=str(tmp_path / "run"), epochs=40, patience=40,
                                               cache_dir=cache), log=logs.append)
    assert any("car_9999_cam1.jpg" in m and "skipped" in m for m in logs)
    head, info = load_head(run / "best.safetensors")
    assert info.kind == "embedding" and 0 < info.threshold < 1 and head.head.dim == 128
    train = [r for r in read_label_csv(csv_path) if r.split == "train" and r.path != bad]
    pairs = make_pairs([r.group for r in train], [r.source for r in train], random.Random(5), 1.0, 1)
    feats = FeatureCache(cache).get_many([r.path for r in train])[0][:, 0]
    d = pair_distances(head.head, feats[[p[0] for p in pairs]], feats[[p[1] for p in pairs]])
    assert verification_metrics(d.tolist(), [p[2] for p in pairs])["roc_auc"] > 0.8


def test_evaluate_classifier_skips_unreadable_files_and_cli_json(tmp_path):
    import json

    from typer.testing import CliRunner

    from carcheck.cli import app

    path = SHIPPED_CLASSIFIERS["severity"]
    if not path.is_file():
        pytest.skip("shipped severity head missing")
    vds = data_path("car_state/vds_damage_severity")
    rows = [LabelRow(p, c, "vds", "test") for c in ("minor", "moderate", "severe")
            for p in sorted((vds / c).glob("*.jpg"))[:3]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(rows[0].path.read_bytes()[:500])
    rows.append(LabelRow(broken, "minor", "vds", "test"))
    csv_path = write_label_csv(rows, tmp_path / "sev.csv")
    r = CliRunner().invoke(app, ["evaluate", "classifier", str(path), str(csv_path), "--json",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert res["n"] == 9 and [f for f, _ in res["unreadable"]] == [str(broken)]
    assert 0 <= res["accuracy"] <= 1 and len(res["confusion"]) == 3
    out = tmp_path / "recipe.csv"
    r = CliRunner().invoke(app, ["dataset", "recipe", "severity", "--root", str(vds.parents[1]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {x.split for x in read_label_csv(out)} == {"train", "val", "test"}
    r = CliRunner().invoke(app, ["dataset", "recipe", "nonsense", "--root", str(vds.parents[1]), "--out", str(out)])
    assert r.exit_code == 2 and "unknown recipe" in r.output
