import json

import numpy as np
import pytest
from PIL import Image

from carcheck.data.coco import CocoSource, CocoInstance

from carcheck.data.coco_dataset import CocoSegmentationDataset, semantic_mask
from carcheck.data.folder import ImageFolderDataset, PairsDataset
from carcheck.data.taxonomy import get_taxonomy
from carcheck.data.yolo import YoloDataset, YoloFormatError, parse_label_file

from conftest import data_path


def _write_coco(tmp_path, anns, cats, size=(40, 30)):
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", size).save(tmp_path / "images" / "a.png")
    d = {"images": [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}],
         "annotations": anns, "categories": cats}
    p = tmp_path / "instances_train.json"
    p.write_text(json.dumps(d))
    return p


def test_polygon_multipolygon_and_rle_masks(tmp_path):
    from pycocotools import mask as mu
    rle_mask = np.zeros((30, 40), np.uint8)
    rle_mask[20:25, 30:35] = 1
    rle = mu.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode()
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "bbox": [0, 0, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[20, 0, 25, 0, 25, 5, 20, 5], [0, 20, 5, 20, 5, 25, 0, 25]], "bbox": [0, 0, 25, 25]},
        {"id": 3, "image_id": 1, "category_id": 3, "segmentation": rle, "bbox": [30, 20, 5, 5]},
    ]
    cats = [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}, {"id": 3, "name": "crack"}]
    p = _write_coco(tmp_path, anns, cats)
    src = CocoSource(p)
    assert src.images[0].path == tmp_path / "images" / "a.png"
    masks = [i.to_mask(30, 40) for i in src.instances(1)]
    assert 90 <= masks[0].sum() <= 121
    assert masks[1][2, 22] and masks[1][22, 2] and not masks[1][15, 15]
    assert masks[2].sum() == 25
    ds = CocoSegmentationDataset([p], "cardd_damage", with_instances=True)
    item = ds[0]
    assert item["image"].shape == (3, 30, 40) and item["mask"].shape == (30, 40)
    assert item["instance_masks"].shape[0] == 3


def test_coco_source_is_indexed_by_pycocotools_quietly(tmp_path, capsys):
    from pycocotools.coco import COCO

    from carcheck.data.coco_schema import CocoFormatError

    anns = [{"id": 7, "image_id": 1, "category_id": 2, "segmentation": [[0, 0, 10, 0, 10, 10]], "bbox": [0, 0, 10, 10]}]
    src = CocoSource(_write_coco(tmp_path, anns, [{"id": 1, "name": "door"}, {"id": 2, "name": "hood"}]))
    assert isinstance(src.coco, COCO) and src.coco.anns[7]["image_id"] == 1
    assert src.category_names() == ["hood"] and src.category_names(annotated_only=False) == ["door", "hood"]
    assert [i.ann_id for i in src.instances(1)] == [7] and src.instances(99) == []
    assert capsys.readouterr().out == ""  # pycocotools' "creating index..." does not reach stdout
    del anns[0]["id"]
    with pytest.raises(CocoFormatError):
        CocoSource(_write_coco(tmp_path, anns, [{"id": 2, "name": "hood"}]))


def test_cardd_overlap_priority_crack_over_dent_over_scratch():
    tax = get_taxonomy("cardd_damage")
    square = [[0, 0, 20, 0, 20, 20, 0, 20]]
    small = [[5, 5, 10, 5, 10, 10, 5, 10]]
    insts = [CocoInstance(1, "dent", small, (0, 0, 0, 0)), CocoInstance(2, "scratch", square, (0, 0, 0, 0)),
             CocoInstance(3, "crack", square, (0, 0, 0, 0))]
    m = semantic_mask(insts, 20, 20, tax, {c: c for c in tax.classes})
    assert m[7, 7] == tax.index("crack") + 1  # crack wins even over the smaller dent
    m2 = semantic_mask(insts[:2], 20, 20, tax, {c: c for c in tax.classes})
    assert m2[7, 7] == tax.index("dent") + 1 and m2[15, 15] == tax.index("scratch") + 1


def test_real_car_parts_semantic_masks():
    root = data_path("car_parts")
    ds = CocoSegmentationDataset([root / "testset" / "annotations.json"], "dsmlr_parts")
    assert len(ds) == 85
    img, mask, insts = ds.load(0)
    assert img.shape[:2] == mask.shape and mask.max() <= 18 and (mask > 0).mean() > 0.05
    # the reduced taxonomy merges left/right through the declared table
    red = CocoSegmentationDataset([root / "testset" / "annotations.json"], "reduced_parts")
    assert red.load(0)[1].max() <= 13


def test_real_lplenka_merged_file_splits_parts_and_damage():
    p = data_path("car_damage/coco_car_damage_lplenka") / "val" / "COCO_merged_annos.json"
    parts = CocoSegmentationDataset([p], "lplenka_parts")
    dmg = CocoSegmentationDataset([p], "damage_binary")
    assert parts.category_map["damage"] is None and parts.category_map["door"] == "door"
    assert dmg.category_map["damage"] == "damage" and dmg.category_map["door"] is None
    assert dmg.load(0)[1].max() == 1


def test_yolo_reader_on_real_coco128_and_bad_labels(tmp_path):
    root = data_path("vehicle_presence/coco128")
    ds = YoloDataset(root / "coco80_names.yaml")
    assert len(ds) == 217
    item = ds[0]
    assert item["boxes"].shape[1] == 4 and item["image"].shape[0] == 3
    bad = tmp_path / "l.txt"
    bad.write_text("99 0.5 0.5 0.1 0.1\n")
    with pytest.raises(YoloFormatError, match="l.txt:1"):
        parse_label_file(bad, 80)


def test_folder_and_pairs_readers_on_real_sets():
    ds = ImageFolderDataset(data_path("car_state/vds_damage_severity"))
    assert ds.classes == ["minor", "moderate", "severe"] and len(ds) == 840
    x, y = ds[0]
    assert x.dtype.is_floating_point is False and x.shape[0] == 3 and y == 0
    pairs = PairsDataset(data_path("verification/vn_traffic_reid_2cam") / "pairs.csv")
    assert len(pairs) == 966 and {s for *_, s in pairs.pairs} == {0, 1}
    a, b, same = pairs[0]
    assert a.shape[0] == 3 and same in (0, 1)
