"""The one-end-per-photo rule on the part map (carcheck.pipeline.part_ends), measured.

The shipped part model's maps on DSMLR photos are scored raw and after the rule for several dominance
ratios k. k is chosen on car_parts/trainingset (the model's training photos: the rule has one number and
is not learned by the model), then the chosen k is reported on car_parts/testset (85 photos) with the
bootstrap 95% CI of the mIoU difference over images (5000 replicates), beside how often ground truth and
prediction have both ends prominent (> 3% of the vehicle's pixels each).

Run: python bench/calibration/part_ends.py   (about 2-3 minutes on 2 cores; writes bench/results/part_ends.json)
"""

from __future__ import annotations

import sys
import argparse
import datetime as dt
import json
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import numpy as np
import torch

DATA = DATA / "car_parts"
KS = (1.5, 2.0, 3.0, 5.0, 10.0)
BOTH = 0.03


def predict(model, ann: Path, bf16: bool):
    from carcheck.data.coco_dataset import CocoSegmentationDataset
    from carcheck.models.inference import segment

    ds = CocoSegmentationDataset([str(ann)], "dsmlr_parts")
    out = []
    for i in range(len(ds)):
        img, gt, _ = ds.load(i)
        p = segment(model, img, longest=512, bf16=bf16, tasks=["parts"])["parts"].numpy().argmax(0)
        out.append((p.astype(np.int64), gt.astype(np.int64)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "part_ends.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    from carcheck.data.taxonomy import get_taxonomy
    from carcheck.evaluate.metrics import bootstrap_miou_difference, confusion_matrix, miou
    from carcheck.models.inference import load_segmenter
    from carcheck.models.runtime import cpu_info, use_bf16
    from carcheck.pipeline.part_ends import consistent_ends, end_shares

    t0 = time.time()
    names = ["background", *get_taxonomy("dsmlr_parts").classes]
    n = len(names)
    model = load_segmenter(ROOT / "src" / "carcheck" / "models" / "weights" / "segmenter_parts_lite0.safetensors")
    bf16 = use_bf16("auto")
    sets = {"trainingset": predict(model, DATA / "trainingset" / "annotations.json", bf16),
            "testset": predict(model, DATA / "testset" / "annotations.json", bf16)}

    def cms(pairs, k):
        return np.stack([confusion_matrix(p if k is None else consistent_ends(p, names, k), g, n) for p, g in pairs])

    def both(maps):
        s = [end_shares(np.where(m == 255, 0, m), names) for m in maps]
        return sum(f > BOTH and r > BOTH for f, r in s)

    rows = {}
    for name, pairs in sets.items():
        rows[name] = {"images": len(pairs), "raw_miou": round(miou(cms(pairs, None).sum(0)), 4),
                      "both_ends_prominent": {"ground_truth": both([g for _, g in pairs]),
                                              "prediction": both([p for p, _ in pairs])},
                      "miou_by_k": {str(k): round(miou(cms(pairs, k).sum(0)), 4) for k in KS}}
    k = max(KS, key=lambda k: rows["trainingset"]["miou_by_k"][str(k)])
    test = sets["testset"]
    boot = bootstrap_miou_difference(cms(test, k), cms(test, None), 5000)
    res = {"what": "one end of the car per photo (pipeline/part_ends.py) on the shipped part model's maps",
           "chosen_k": k, "rule": "largest mIoU on car_parts/trainingset",
           "testset": {"raw_miou": rows["testset"]["raw_miou"], "with_rule_miou": rows["testset"]["miou_by_k"][str(k)],
                       "diff": round(boot["diff"], 4), "ci95": [round(x, 4) for x in boot["ci95"]],
                       "replicates": boot["replicates"]},
           "sets": rows, "cpu": cpu_info(), "date": dt.date.today().isoformat(), "wall_s": round(time.time() - t0, 1)}
    write_results(args.out, res, indent=2)
    for name, r in rows.items():
        print(f"{name:<12} {r['images']:>4} photos  raw mIoU {r['raw_miou']:.4f}  by k: {r['miou_by_k']}  "
              f"both ends > {BOTH:.0%}: GT {r['both_ends_prominent']['ground_truth']}, "
              f"prediction {r['both_ends_prominent']['prediction']}")
    t = res["testset"]
    print(f"chosen k {k} (trainingset); testset mIoU {t['raw_miou']:.4f} -> {t['with_rule_miou']:.4f}, "
          f"difference {t['diff']:+.4f}, 95% CI [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}] -> {args.out}")


if __name__ == "__main__":
    main()
