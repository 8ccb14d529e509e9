"""Assessment benchmark (issue: carcheck assess).

Recall of ground-truth damaged parts on the lplenka photos: a ground-truth damaged part is an
lplenka part (headlamp, rear_bumper, door, hood, front_bumper) whose polygon a damage polygon
overlaps; a predicted damaged part is a detection's DSMLR part mapped to lplenka's 5 by the
declared table ``dsmlr_parts -> lplenka_parts`` (doors -> door, head/tail lights -> headlamp,
back_bumper -> rear_bumper; glass, mirrors, wheel, trunk, tailgate dropped). Precision is
reported beside it. Speed: the whole per-photo assessment (decode, presence gate, one backbone
pass, both segmentation heads, every image-level head, fusion) median over the folder at 2
threads, models loaded once; the case-level steps (same-vehicle check, Grad-CAM of flagged
photos) timed on the val case as a whole; report writing (privacy blur, overlays, HTML) timed
separately per photo.

Caveat: all 70 lplenka photos also occur (resized, relabelled) in lensor_severity, whose train
split trained the damage head.

Run: python bench/accuracy/assess.py  (prints a table, writes bench/results/assess.json)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, clock, time_stats, timed_each, write_results  # noqa: E402,F401

import numpy as np
import torch

from carcheck.data.taxonomy import get_mapping
from carcheck.evaluate.assessment import damaged_parts_ground_truth
from carcheck.pipeline.assess import Assessor
from carcheck.report.html import write_report

TARGETS = {"damaged_part_recall": 0.6, "seconds_per_photo_median": 0.3}


def main() -> None:
    torch.set_num_threads(2)
    assessor = Assessor()
    mapping = get_mapping("dsmlr_parts", "lplenka_parts")
    root = DATA / "car_damage" / "coco_car_damage_lplenka"
    res = {"per_split": {}, "targets": TARGETS}
    tp = fn = fp = 0
    times, skipped = [], 0
    for split in ("val", "train"):
        gt = damaged_parts_ground_truth(root / split / "COCO_merged_annos.json")
        s_tp = s_fn = s_fp = 0
        files = sorted(gt)
        outs, ts = timed_each(lambda f: assessor.assess_photo(Path(f)), files, warmup=1)  # warm-up: the first photo
        times += ts
        for f, (rep, _, _) in zip(files, outs):
            if rep.status != "assessed":
                skipped += 1
                pred = set()
            else:
                pred = {mapping.map_name(d.part) for d in rep.detections if d.part != "unassigned"} - {None}
            s_tp += len(gt[f] & pred)
            s_fn += len(gt[f] - pred)
            s_fp += len(pred - gt[f])
        res["per_split"][split] = {"photos": len(files), "recall": s_tp / max(1, s_tp + s_fn),
                                   "precision": s_tp / max(1, s_tp + s_fp), "gt_damaged_parts": s_tp + s_fn}
        tp, fn, fp = tp + s_tp, fn + s_fn, fp + s_fp
    # report writing cost on the val case
    files = sorted((root / "val").glob("*.jpg"))
    (report, visuals), case_s = clock(assessor.assess, files, "bench")
    gradcams = sum(1 for v in visuals.values() if v.gradcam is not None)
    with tempfile.TemporaryDirectory() as d:
        _, write_s = clock(write_report, report, visuals, d, assessor.part_names, assessor.damage_names)
        report_s = write_s / max(1, len(visuals))
    res["summary"] = {
        "damaged_part_recall": tp / max(1, tp + fn), "damaged_part_precision": tp / max(1, tp + fp),
        "photos": len(times), "skipped_by_gate": skipped,
        "seconds_per_photo_median": statistics.median(times), "seconds_per_photo_p90": float(np.percentile(times, 90)),
        "seconds_per_photo_p95": time_stats(times)["p95_s"],
        "report_writing_seconds_per_photo": report_s,
        "val_case_seconds_total": case_s, "val_case_photos": len(files), "val_case_gradcam_maps": gradcams,
        "val_case_photos_flagged_different_vehicle": len(report.consistency.different_vehicle) if report.consistency else None,
    }
    res["part_mapping"] = dict(mapping.table)
    res["targets_met"] = {"damaged_part_recall": res["summary"]["damaged_part_recall"] >= TARGETS["damaged_part_recall"],
                          "seconds_per_photo_median": res["summary"]["seconds_per_photo_median"] <= TARGETS["seconds_per_photo_median"]}
    print(f"{'metric':<36}{'value':>10}{'target':>9}")
    for k, v in res["summary"].items():
        print(f"{k:<36}{round(v, 4):>10}{TARGETS.get(k, ''):>9}")
    for s, v in res["per_split"].items():
        print(f"  {s}: recall {v['recall']:.3f} precision {v['precision']:.3f} ({v['gt_damaged_parts']} GT damaged parts)")
    out = RESULTS / "assess.json"
    write_results(out, res, indent=2)
    print(f"saved {out}")


if __name__ == "__main__":
    sys.exit(main())
