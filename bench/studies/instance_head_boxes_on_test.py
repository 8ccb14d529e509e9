"""Issue 27: the shipped instance head's own box instances (mode boxes, the best box setting on CarDD valid) on CarDD test,
(not the shipped decode, which is grouping). Run: python bench/studies/instance_head_boxes_on_test.py > bench/results/instance_head_boxes_test.json"""
import json
import sys

import torch

from carcheck.data.yolo import annotation_file
from carcheck.evaluate.segmentation import evaluate_segmentation
from carcheck.models.inference import DEFAULT_SEGMENTERS, load_segmenters
from carcheck.models.instances import load_instance_head

torch.set_num_threads(2)
f = [str(annotation_file("../shared/data/car_damage/cardd_roboflow", "test"))]
hi = load_instance_head(mode="boxes", threshold=0.01, min_cover=0.0, empty="drop", exclusive=False, score="peak_x_mean")
r = evaluate_segmentation(load_segmenters(list(DEFAULT_SEGMENTERS)), f, "damage", instances=True, instances_from="head",
                          longest=640, instance_head=hi).to_dict()
json.dump({k: r[k] for k in ("instance_ap", "instances_from", "instance_ms_per_photo", "images")}, sys.stdout, indent=2)
