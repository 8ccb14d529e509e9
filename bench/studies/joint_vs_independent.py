"""Joint vs independent segmentation models on today's data (issue 15, item 5).

Joint: one decoder, a parts head and a damage head, trained on DSMLR parts (car_parts/trainingset) and
CarDD damage (train) by alternating one batch of each; each dataset labels only its own task, so the
other task's loss is not computed on it (Ma et al., IEEE T-ITS 2023, II-C-4). Independent: the shipped
parts model (DSMLR) and the shipped CarDD damage model, each with its own decoder. The joint run used
the CarDD model's recipe (5 x 200 steps, 512 px crops of 640 px photos, zoom 0.5-1.5, focal + Dice,
median-frequency class weights) and gets the same post-hoc logit adjustment for its damage head,
chosen on CarDD valid (``bench/calibration/cardd_calibrate.py --weights JOINT --write --out ...``).

Scores: parts mIoU on car_parts/testset (85 photos, 512 px, the assessment's input), damage mIoU on
CarDD test (298 photos, 640 px), each with the bootstrap 95% CI of joint - independent over images
(``carcheck evaluate segmentation ... --compare``, 5000 replicates).

Run: python bench/studies/joint_vs_independent.py [--joint runs/joint_cardd/best.safetensors]
Writes bench/results/joint_vs_independent_cardd.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

WEIGHTS = ROOT / "src" / "carcheck" / "models" / "weights"


def evaluate(data: Path, task: str, joint: Path, other: Path, longest: int) -> dict:
    cmd = [str(Path(sys.executable).with_name("carcheck")), "evaluate", "segmentation", str(data), "--task", task, "--weights",
           str(joint), "--compare", str(other), "--longest", str(longest), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    d = json.loads(out[out.index("{"):])
    b = d["bootstrap_vs"]
    return {"data": str(data.relative_to(DATA.parent)), "longest_px": longest, "images": d.get("images"),
            "miou_joint": d["miou"], "miou_independent": b["miou_other"], "diff_joint_minus_independent": round(b["diff"], 4),
            "ci95": [round(x, 4) for x in b["ci95"]], "replicates": b["replicates"], "iou_joint": d["iou"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--joint", type=Path, default=ROOT / "runs" / "joint_cardd" / "best.safetensors")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "joint_vs_independent_cardd.json")
    args = ap.parse_args()
    from carcheck.models.runtime import cpu_info

    res = {
        "what": __doc__.split("\n\n")[0],
        "joint": str(args.joint.relative_to(ROOT)) if args.joint.is_relative_to(ROOT) else str(args.joint),
        "training_command": "carcheck train segmentation --task parts:dsmlr_parts:../shared/data/car_parts/trainingset/"
                            "annotations.json --task damage:cardd_damage:data/cardd:data/cardd --out runs/joint_cardd "
                            "--epochs 5 --max-steps-per-epoch 200 --batch-size 8 --size 512 --load-size 640 --val-size 640 "
                            "--scale 0.5,1.5 --loss focal+dice --class-weights --lr 0.002 --channels 96 --threads 2",
        "parts": evaluate(DATA / "car_parts" / "testset" / "annotations.json", "parts", args.joint,
                          WEIGHTS / "segmenter_parts_lite0.safetensors", 512),
        "damage": evaluate(DATA / "car_damage" / "cardd_roboflow", "damage", args.joint,
                           WEIGHTS / "segmenter_damage_cardd_lite0.safetensors", 640),
        "paper": "Ma et al. (T-ITS 2023) found the independent models better than the joint one on their data",
        "cpu": cpu_info(), "date": dt.date.today().isoformat(),
    }
    write_results(args.out, res, indent=2)
    print(f"{'task':<8}{'joint':>8}{'independent':>13}{'joint - indep.':>16}{'95% CI':>20}")
    for t in ("parts", "damage"):
        r = res[t]
        print(f"{t:<8}{r['miou_joint']:>8.4f}{r['miou_independent']:>13.4f}{r['diff_joint_minus_independent']:>+16.4f}"
              f"    [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
