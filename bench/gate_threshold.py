"""Choose and measure the vehicle-presence gate threshold (Ma et al. II-A, module 1).

Score = summed ImageNet probability of vehicle classes from the backbone pass at 512 px (the
assessment's own input). Negatives: vehicle_presence/coco128 photos without car/bus/truck.
Positives: coco128 photos whose largest vehicle box covers >= 5% of the image, plus car photos
(car_parts testset, lensor_severity test, lplenka val). Judgement call: coco128 photos whose
vehicles are all smaller than 5% of the image are excluded as ambiguous (PROVENANCE.md:
background cars). The threshold maximises balanced accuracy; a split-half check reports how
stable it is.

Run: python bench/gate_threshold.py  (prints a table, writes bench/results/gate_threshold.json)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from carcheck.data.images import load_image
from carcheck.models.backbone import build_backbone, inference_context
from carcheck.models.inference import to_input_tensor
from carcheck.pipeline.gate import vehicle_score

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def scores(backbone, files):
    out = []
    for f in files:
        x = to_input_tensor(load_image(f), 512)
        with inference_context(True):
            out.append(float(vehicle_score(backbone(x, with_logits=True).logits)[0]))
    return np.array(out)


def main() -> None:
    torch.set_num_threads(2)
    bb = build_backbone("lite0")
    root = DATA / "vehicle_presence" / "coco128"
    neg, pos_coco, ambiguous = [], [], 0
    with open(root / "labels.csv") as f:
        for r in csv.DictReader(f):
            p = root / "images" / r["file"]
            if r["has_vehicle"] == "0":
                neg.append(p)
            elif float(r["max_vehicle_box_area"]) >= 0.05:
                pos_coco.append(p)
            else:
                ambiguous += 1
    groups = {
        "coco128_no_vehicle": neg,
        "coco128_vehicle": pos_coco,
        "car_parts_testset": sorted((DATA / "car_parts" / "testset" / "JPEGImages").glob("*.jpg")),
        "lensor_test_damage": sorted((DATA / "car_damage" / "lensor_severity" / "images" / "test").glob("*.jpg")),
        "lplenka_val_damage": sorted((DATA / "car_damage" / "coco_car_damage_lplenka" / "val").glob("*.jpg")),
    }
    s = {k: scores(bb, v) for k, v in groups.items()}
    y = np.concatenate([np.zeros(len(s["coco128_no_vehicle"]))] + [np.ones(len(v)) for k, v in s.items() if k != "coco128_no_vehicle"])
    x = np.concatenate([s["coco128_no_vehicle"]] + [v for k, v in s.items() if k != "coco128_no_vehicle"])

    def bal_acc(t, xs, ys):
        return 0.5 * ((xs[ys == 1] >= t).mean() + (xs[ys == 0] < t).mean())

    grid = np.round(np.arange(0.005, 0.5, 0.005), 3)
    accs = [bal_acc(t, x, y) for t in grid]
    best = float(grid[int(np.argmax(accs))])
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    a, b = idx[: len(x) // 2], idx[len(x) // 2:]
    t_a = float(grid[int(np.argmax([bal_acc(t, x[a], y[a]) for t in grid]))])
    result = {
        "threshold": best, "balanced_accuracy": round(float(max(accs)), 4),
        "accuracy": round(float(((x >= best) == y).mean()), 4),
        "per_group_pass_rate": {k: round(float((v >= best).mean()), 4) for k, v in s.items()},
        "per_group_n": {k: len(v) for k, v in s.items()}, "ambiguous_excluded": ambiguous,
        "split_half": {"threshold_on_half_a": t_a, "balanced_accuracy_on_half_b": round(float(bal_acc(t_a, x[b], y[b])), 4)},
        "input": "512 px longer side, bf16, Lite0 ImageNet logits",
    }
    print(f"{'group':<22}{'n':>5}{'passes gate':>13}")
    for k in s:
        print(f"{k:<22}{len(s[k]):>5}{result['per_group_pass_rate'][k]:>13.3f}")
    print(f"threshold {best}  balanced accuracy {result['balanced_accuracy']}  accuracy {result['accuracy']}  "
          f"split-half: t={t_a} -> {result['split_half']['balanced_accuracy_on_half_b']}")
    out = Path(__file__).parent / "results" / "gate_threshold.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    sys.exit(main())
