"""Training data of the damage model (issue 26, item 2): lensor's ambiguous "broken" is ignored, not background;
hard negatives (clean cars) train as all-background photos; a run can warm-start from a trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from carcheck.data.coco import CocoInstance, negatives_coco

from carcheck.data.coco_dataset import CocoSegmentationDataset, category_map_for, semantic_mask
from carcheck.data.taxonomy import IGNORE, get_mapping, get_taxonomy


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_lensor_broken_is_ignored_and_a_labelled_class_wins_over_it():
    cardd = get_taxonomy("cardd_damage")
    cmap = category_map_for(["severe-broken", "minor-dent"], cardd)
    assert cmap == {"severe-broken": IGNORE, "minor-dent": "dent"}
    insts = [CocoInstance(1, "severe-broken", _square(0, 0, 20, 20), (0, 0, 20, 20)),
             CocoInstance(2, "minor-dent", _square(10, 10, 30, 30), (10, 10, 20, 20))]
    m = semantic_mask(insts, 40, 40, cardd, cmap)
    assert m[5, 5] == 255  # broken only: ignored, not background (0) and not a CarDD class
    assert m[15, 15] == cardd.index("dent") + 1  # the dent overlapping it wins
    assert m[35, 35] == 0
    lut = get_mapping("lensor_damage", "cardd_damage").lut()
    assert lut[get_taxonomy("lensor_damage").index("moderate-broken") + 1] == 255


def test_negatives_train_as_background_beside_labelled_photos(tmp_path):
    img = tmp_path / "clean.jpg"
    Image.fromarray(np.full((24, 32, 3), 120, np.uint8)).save(img)
    neg = tmp_path / "neg.json"
    neg.write_text(json.dumps(negatives_coco([img], "cardd_damage")))
    pos_img = tmp_path / "dent.png"
    Image.fromarray(np.full((24, 32, 3), 60, np.uint8)).save(pos_img)
    pos = tmp_path / "pos.json"
    pos.write_text(json.dumps({"images": [{"id": 1, "file_name": str(pos_img), "width": 32, "height": 24}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8],
                                                "segmentation": _square(2, 2, 10, 10), "area": 64, "iscrowd": 0}],
                               "categories": [{"id": 1, "name": "dent"}]}))
    ds = CocoSegmentationDataset([str(pos), str(neg)], "cardd_damage")
    assert len(ds) == 2
    masks = {str(p): ds.load(i)[1] for i, p in enumerate(ds.image_paths())}
    assert masks[str(img.resolve())].shape == (24, 32) and not masks[str(img.resolve())].any()
    assert masks[str(pos_img)].any()


def test_warm_start_loads_a_trained_model_and_refuses_another_design(tmp_path):
    from safetensors.torch import save_file

    from carcheck.models.segmentation import CarSegmenter
    from carcheck.train.segmentation import warm_start

    torch.manual_seed(0)
    a = CarSegmenter({"damage": 7}, unfreeze=2)
    f = tmp_path / "a.safetensors"
    save_file({k: v.detach().to(torch.float16 if k.startswith("tail.") else torch.float32).contiguous()
               for k, v in a.trainable_state_dict().items()}, str(f))
    torch.manual_seed(1)
    b = CarSegmenter({"damage": 7}, unfreeze=2)
    key = next(k for k in b.trainable_state_dict() if k.startswith("decoder."))
    assert not torch.equal(a.trainable_state_dict()[key], b.trainable_state_dict()[key])
    warm_start(b, f)
    for k, v in a.trainable_state_dict().items():
        tol = 1e-2 if k.startswith("tail.") else 0.0  # the tail went through float16
        assert torch.allclose(b.trainable_state_dict()[k].float(), v.float(), atol=tol, rtol=tol), k
    with pytest.raises(ValueError, match="does not fit"):
        warm_start(CarSegmenter({"damage": 7}, unfreeze=0), f)


def test_negatives_state_the_upright_size_of_exif_rotated_photos(tmp_path):
    img = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: 32x24 stored -> 24x32 upright
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(img, exif=exif)
    (entry,) = negatives_coco([img], "cardd_damage")["images"]
    assert (entry["width"], entry["height"]) == (24, 32)
    from carcheck.data.images import load_image

    assert load_image(img).shape[:2] == (32, 24)  # what the dataset loads: the declared size must match it


def test_instance_evaluation_skips_ignore_labelled_objects(tmp_path):
    """carcheck evaluate --instances on lensor data: an instance mapped to the ignore label is no ground-truth
    object (it crashed with TaxonomyError '<ignore>' since the mapping gained IGNORE; bench/accuracy/segmentation.py)."""
    from carcheck.evaluate.segmentation import evaluate_segmentation
    from carcheck.models.segmentation import CarSegmenter

    img = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
    f = tmp_path / "lensor.json"
    f.write_text(json.dumps({
        "images": [{"id": 1, "file_name": str(img), "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400,
                         "segmentation": _square(0, 0, 20, 20), "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 30, 20, 20], "area": 400,
                         "segmentation": _square(30, 30, 50, 50), "iscrowd": 0}],
        "categories": [{"id": 1, "name": "severe-broken"}, {"id": 2, "name": "minor-dent"}]}))
    torch.manual_seed(0)
    model = CarSegmenter({"damage": 7}).eval()
    model.taxonomies = {"damage": "cardd_damage"}
    r = evaluate_segmentation(model, [str(f)], "damage", instances=True, instances_from="components", longest=64,
                              precision="fp32", on_error=pytest.fail)
    assert r.to_dict()["instance_ap"]["segm"] is not None
