"""Issue 27: the shipped instance head's own box instances (mode boxes, the best box setting on CarDD valid) on CarDD
test (not the shipped decode, which is grouping).

Run: python bench/studies/instance_head_boxes_on_test.py   (writes bench/results/instance_head_boxes_test.json)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import DATA, RESULTS, write_results  # noqa: E402

import torch  # noqa: E402

from carcheck.data.yolo import annotation_file  # noqa: E402
from carcheck.evaluate.segmentation import evaluate_segmentation  # noqa: E402
from carcheck.models.inference import DEFAULT_SEGMENTERS, load_segmenters  # noqa: E402
from carcheck.models.instances import load_instance_head  # noqa: E402

torch.set_num_threads(2)
f = [str(annotation_file(str(DATA / "car_damage" / "cardd_roboflow"), "test"))]
settings = dict(mode="boxes", threshold=0.01, min_cover=0.0, empty="drop", exclusive=False, score="peak_x_mean")
hi = load_instance_head(**settings)
r = evaluate_segmentation(load_segmenters(list(DEFAULT_SEGMENTERS)), f, "damage", instances=True, instances_from="head",
                          longest=640, instance_head=hi).to_dict()
res = {k: r[k] for k in ("instance_ap", "instances_from", "instance_ms_per_photo", "images")}
write_results(RESULTS / "instance_head_boxes_test.json", {**res, "decode": settings, "longest_px": 640}, indent=2)
print(res["instance_ap"]["segm"]["AP"], res["instance_ap"]["bbox"]["AP"], res["instance_ms_per_photo"])
