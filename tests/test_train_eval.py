"""Trainer (checkpoint, resume, best kept) on a tiny synthetic COCO set; metrics and COCO AP."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from carcheck.evaluate.metrics import bootstrap_miou_difference, confusion_matrix, iou_from_confusion, miou
from carcheck.evaluate.segmentation import coco_instance_ap, components_as_detections
from carcheck.train.losses import dice_loss, focal_loss, segmentation_loss
from carcheck.train.segmentation import SegTrainConfig, TaskSpec, median_frequency_weights, train_segmentation

from conftest import data_path


def _tiny_coco(tmp_path, n=6):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        a = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
        a[20:60, 30:90] = (200, 40, 40)  # the "hood"
        Image.fromarray(a).save(img_dir / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 128, "height": 96})
        anns.append({"id": i, "image_id": i, "category_id": 14, "segmentation": [[30, 20, 90, 20, 90, 60, 30, 60]],
                     "bbox": [30, 20, 60, 40], "area": 2400, "iscrowd": 0})
    cats = [{"id": 14, "name": "hood"}, {"id": 15, "name": "left_mirror"}]
    p = tmp_path / "annotations.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return p


def _stop_at(stop: str):
    """A ``track`` that interrupts the run (KeyboardInterrupt) when the loop described as ``stop`` starts."""
    def track(it, description: str = "", **_):
        if description == stop:
            raise KeyboardInterrupt
        return it
    return track


def test_train_checkpoints_resumes_and_keeps_best(tmp_path):
    ann = _tiny_coco(tmp_path)
    cfg = SegTrainConfig(tasks=[TaskSpec("parts", "dsmlr_parts", [str(ann)])], out=str(tmp_path / "run"), epochs=2,
                         batch_size=2, size=64, val_fraction=0.34, class_weights=True)
    with pytest.raises(KeyboardInterrupt):  # stopped when epoch 2 of 2 starts
        train_segmentation(cfg, track=_stop_at("epoch 2/2"), log=lambda *a: None)
    run = tmp_path / "run"
    assert (run / "best.safetensors").exists() and (run / "last.pt").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    cfg.epochs = 3  # the cosine schedule's length: a resumed run may not change it
    with pytest.raises(ValueError, match="epochs: 2 -> 3"):
        train_segmentation(cfg, log=lambda *a: None, resume=True)
    cfg.epochs = 2
    train_segmentation(cfg, log=lambda *a: None, resume=True)  # resumes at epoch 1
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [0, 1]
    from carcheck.models.inference import load_segmenter
    m = load_segmenter(run / "best.safetensors")
    assert m.taxonomies == {"parts": "dsmlr_parts"}


def test_segmentation_holdout_is_the_split_the_shipped_parts_models_used():
    """The segmentation trainer now holds out validation images through assign_splits; on
    car_parts/trainingset (files listed in path order) it picks the images the trainer's own
    shuffle picked before (random.Random(seed) over the indices, the first round(n * fraction))."""
    import random

    from carcheck.data.coco_dataset import CocoSegmentationDataset
    from carcheck.train.segmentation import _holdout

    ds = CocoSegmentationDataset([data_path("car_parts") / "trainingset" / "annotations.json"], "dsmlr_parts")
    for seed, frac in ((0, 0.1), (3, 0.25)):
        idx = list(range(len(ds)))
        random.Random(seed).shuffle(idx)
        k = round(len(ds) * frac)
        assert _holdout(ds, frac, seed) == (sorted(idx[k:]), sorted(idx[:k]))


def test_iou_miou_and_confusion():
    gt = np.array([[0, 0, 1, 1], [0, 0, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 0]])
    cm = confusion_matrix(pred, gt, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    iou = iou_from_confusion(cm)
    assert iou.tolist() == pytest.approx([3 / 5, 2 / 3, 1 / 2])
    assert miou(cm) == pytest.approx(np.mean([3 / 5, 2 / 3, 1 / 2]))
    assert miou(cm, with_background=False) == pytest.approx(np.mean([2 / 3, 1 / 2]))


def test_bootstrap_is_the_paired_percentile_bootstrap_over_images():
    """scipy's paired bootstrap equals the textbook loop with the same draws: resample images (the
    same ones for both models), mIoU of the summed matrices, 2.5th / 97.5th percentiles."""
    rng = np.random.default_rng(1)
    gt = [rng.integers(0, 3, (12, 12)) for _ in range(25)]
    noisy = lambda g, p: np.where(rng.random(g.shape) < p, g, rng.integers(0, 3, g.shape))  # noqa: E731
    a = np.stack([confusion_matrix(noisy(g, 0.8), g, 3) for g in gt])
    b = np.stack([confusion_matrix(noisy(g, 0.7), g, 3) for g in gt])
    draws = np.random.default_rng(7)
    diffs = []
    for _ in range(300):
        i = draws.integers(0, len(a), len(a))
        diffs.append(miou(a[i].sum(0)) - miou(b[i].sum(0)))
    res = bootstrap_miou_difference(a, b, replicates=300, seed=7)
    assert res["ci95"] == pytest.approx([np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)], abs=1e-12)
    assert res["diff"] == pytest.approx(miou(a.sum(0)) - miou(b.sum(0))) and res["method"] == "percentile"
    with pytest.raises(ValueError, match="shape"):
        bootstrap_miou_difference(a, b[:-1])


def test_perfect_instances_give_ap_one_and_components_are_split():
    probs = np.zeros((2, 64, 64), np.float32)
    probs[0] = 1
    for (y, x) in ((5, 5), (40, 40)):
        probs[1, y:y + 10, x:x + 10], probs[0, y:y + 10, x:x + 10] = 0.9, 0.1
    dets = components_as_detections(probs)
    assert len(dets) == 2 and all(abs(s - 0.9) < 1e-6 for _, _, s in dets)
    gt = [(0, [(c, m) for c, m, _ in dets])]
    ap = coco_instance_ap(gt, [(0, c, m, s) for c, m, s in dets], ["damage"], {0: (64, 64)})
    assert ap["segm"]["AP"] == pytest.approx(1.0) and ap["bbox"]["AP50"] == pytest.approx(1.0)
    assert ap["segm"]["AP_S"] == pytest.approx(1.0) and ap["segm"]["AP_L"] == -1.0


def test_losses_and_class_weights():
    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 2
    for name in ("ce", "dice", "focal", "ce+dice", "focal+dice"):
        loss = segmentation_loss(name, logits, target)
        loss.backward()
        assert loss.item() > 0
    perfect = torch.full((1, 3, 4, 4), -20.0)
    perfect.scatter_(1, target[:, None], 20.0)
    assert dice_loss(perfect, target).item() < 1e-3 and focal_loss(perfect, target).item() < 1e-6
    with pytest.raises(ValueError):
        segmentation_loss("nope", logits, target)
    w = median_frequency_weights([np.array([[0, 0, 0, 1]], np.uint8)], 3)
    assert w[1] > w[0] and w[2] == 10.0


def test_unfrozen_tail_starts_as_the_shared_pass_trains_and_round_trips(tmp_path):
    """The partly unfrozen design (CarSegmenter(unfreeze=N)): its own copy of the last N stages equals the
    shared pass before training at any input size (from the backbone's uncropped maps; a plain list of
    cropped maps keeps the shapes only), trains at lr x backbone_lr_mult with ImageNet's BN statistics kept,
    and comes back from best.safetensors, alone and second in a composed set."""
    from carcheck.models.backbone import inference_context
    from carcheck.models.inference import load_segmenter
    from carcheck.models.segmentation import CarSegmenter
    from carcheck.train.segmentation import param_groups

    for levels in (1, 2, 3):
        m = CarSegmenter({"damage": 3}, unfreeze=levels).eval()
        for size in ((96, 128), (97, 130), (225, 290)):
            x = torch.rand(1, 3, *size)
            with torch.no_grad():
                feats = m.backbone(x).features
                again, plain = m.tail(feats), m.tail(list(feats))
            assert all(torch.equal(a, b) for a, b in zip(feats, again)), (levels, size)
            assert [f.shape for f in plain] == [f.shape for f in feats]
    with pytest.raises(ValueError, match="unfreeze 4"):
        CarSegmenter({"damage": 3}, unfreeze=4)

    ann = _tiny_coco(tmp_path)
    cfg = SegTrainConfig(tasks=[TaskSpec("parts", "dsmlr_parts", [str(ann)])], out=str(tmp_path / "run"), epochs=1,
                         batch_size=2, size=64, val_fraction=0.34, unfreeze=2, backbone_lr_mult=0.5, lr=0.01)
    groups = param_groups(CarSegmenter({"parts": 19}, unfreeze=2), cfg)
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(0.005)
    assert sum(p.numel() for p in groups[1]["params"]) == sum(
        p.numel() for p in CarSegmenter({"parts": 19}, unfreeze=2).tail.parameters())
    run = train_segmentation(cfg, log=lambda *a: None)
    from safetensors import safe_open
    with safe_open(str(run / "best.safetensors"), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["unfreeze"] == "2" and any(k.startswith("tail.groups.1.") for k in keys)
    assert not any(k.startswith("backbone.") for k in keys)
    trained = load_segmenter(run / "best.safetensors", fuse=False)
    fresh = CarSegmenter({"parts": trained.heads["parts"].classifier.out_channels}, unfreeze=2)
    name = next(k for k in keys if k.startswith("tail.groups.1.") and k.endswith("_project_conv.weight"))
    assert not torch.equal(trained.state_dict()[name], fresh.state_dict()[name])  # the tail was trained
    stats = [k for k in keys if k.startswith("tail.") and k.endswith("running_mean")]
    assert stats and all(torch.equal(trained.state_dict()[k], fresh.state_dict()[k]) for k in stats)  # frozen BN
    fused = load_segmenter(run / "best.safetensors")
    x = torch.rand(1, 3, 64, 96)
    with inference_context(bf16=False):
        a, b = trained(x)["parts"], fused(x)["parts"]
    assert torch.allclose(a, b, atol=1e-3)
    # second in a composed set: its tail is rebuilt beside a backbone the first model already folded
    from carcheck.models.inference import CARDD_SEGMENTER, load_segmenters
    if CARDD_SEGMENTER.exists():
        composed = load_segmenters([CARDD_SEGMENTER, run / "best.safetensors"])
        with inference_context(bf16=False):
            c = composed(x)["parts"]
        assert torch.allclose(a, c, atol=1e-3)
