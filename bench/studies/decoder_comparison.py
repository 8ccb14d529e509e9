"""FPN vs DeepLabV3+-style ASPP decoder on the same frozen Lite0 backbone (issue: segmentation,
deliverable 1: "choose by a measured comparison").

Both decoders were trained with one recipe per task, differing only in ``--decoder``:
parts on car_parts/trainingset (10% held out for validation), damage type on lensor train (val
for selection); 14 epochs, batch 8, 384 px crops, AdamW 2e-3, ce+dice, seed 0, frozen backbone.
They ran on a lent GPU (``--device cuda --workers 12``) from copies of the training images
downscaled to 448 px longest side (the trainer preloads at 442 px anyway), through the Python API
with the config this CLI call builds:

    carcheck train segmentation --task parts:dsmlr_parts:<car_parts/trainingset>/annotations.json \\
        --epochs 14 --batch-size 8 --size 384 --lr 0.002 --loss ce+dice --seed 0 --decoder aspp \\
        --device cuda --workers 12 --out runs/parts_aspp

This script scores the four files on the held-out test splits at full resolution (the paper's
protocol, as bench/accuracy/segmentation.py) with the bootstrap 95% CI of the mIoU difference (5,000
replicates over images) and times each decoder (2 threads, 512x512, median of 20).

Run: python bench/studies/decoder_comparison.py [--runs runs/gpu_seg]
Writes bench/results/decoder_comparison.json.
"""

from __future__ import annotations

import sys
import argparse
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import torch

from _common import median_time  # noqa: E402  (bench/ is on sys.path: see the top)
from carcheck.evaluate.metrics import bootstrap_miou_difference
from carcheck.evaluate.segmentation import evaluate_segmentation
from carcheck.models.backbone import inference_context
from carcheck.models.inference import load_segmenter

SETS = {"parts": ("parts", [DATA / "car_parts/testset/annotations.json"], None, "parts"),
        "damage": ("damage", [DATA / "car_damage/lensor_severity/annotations/instances_test.json"], None, "damage14")}


def _ms(model) -> float:
    x = torch.rand(1, 3, 512, 512).contiguous(memory_format=torch.channels_last)
    with inference_context():
        feats = model.backbone(x).features
        return 1000 * median_time(lambda: model.decode(feats, (512, 512)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "gpu_seg")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = {}
    for name, (task, files, tax, prefix) in SETS.items():
        res = {}
        for dec in ("fpn", "aspp"):
            model = load_segmenter(args.runs / f"{prefix}_{dec}" / "best.safetensors")
            r = evaluate_segmentation(model, [str(f) for f in files], task, tax)
            best = json.loads((args.runs / f"{prefix}_{dec}" / "best.json").read_text())
            res[dec] = {"r": r, "test_miou": r.to_dict()["miou"], "test_miou_no_bg": r.to_dict()["miou_no_bg"],
                        "test_iou": r.to_dict()["iou"], "val_miou": best["val"][task]["miou"], "best_epoch": best["epoch"],
                        "decoder_ms_512": _ms(model)}
        b = bootstrap_miou_difference(res["fpn"]["r"].per_image, res["aspp"]["r"].per_image, 5000)
        for dec in res:
            res[dec].pop("r")
        out[name] = {**res, "fpn_minus_aspp": b}
        print(f"{name}: FPN test mIoU {res['fpn']['test_miou']:.4f} vs ASPP {res['aspp']['test_miou']:.4f}; "
              f"difference {b['diff']:+.4f}, 95% CI [{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}]; decoder ms "
              f"{res['fpn']['decoder_ms_512']:.1f} vs {res['aspp']['decoder_ms_512']:.1f}")
    path = ROOT / "bench" / "results" / "decoder_comparison.json"
    write_results(path, out, indent=1, default=str)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
