"""Choose the CarDD damage model's post-hoc logit adjustment on CarDD **valid** (never test).

The model was trained with median-frequency class weights w (background 0.1, crack 10): weighted
cross-entropy shifts the posterior towards the up-weighted classes, so the raw model paints damage
on most clean photos. Logit adjustment (Menon et al., "Long-tail learning via logit adjustment",
ICLR 2021, eq. 10) adds ``-tau * log w_c`` to each class's logit; tau = 1 undoes the weighting for
plain weighted CE, and the focal and Dice terms make the right value an empirical question, so tau is
chosen on validation: the largest binary damage IoU on a seeded subset of CarDD valid. The share of
undamaged photos with any fusion-sized region (the damage filter recipe's *validation* undamaged
photos) is printed beside it.

Run: python bench/calibration/cardd_calibrate.py [--images 300] [--write OUT.safetensors]
``--write OUT`` writes a new weights file: the model's tensors unchanged, the chosen bias in its metadata
(``logit_bias``). It never rewrites the input file (``--weights``, default the shipped one) in place:
shipping the result is a separate, reviewed step (copy OUT over the shipped file, then regenerate the
card with ``python bench/cards/generate.py``). Writes bench/results/cardd_calibration.json.
"""

from __future__ import annotations

import sys
import argparse
import csv
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from carcheck.data.coco_dataset import CocoSegmentationDataset
from carcheck.data.images import load_image
from carcheck.data.yolo import annotation_file
from carcheck.evaluate.metrics import confusion_matrix, iou_from_confusion, miou
from carcheck.models.backbone import inference_context
from carcheck.models.inference import CARDD_SEGMENTER, load_segmenter, to_input_tensor
from carcheck.models.runtime import cpu_info, resolve_precision, use_bf16

REPO = ROOT
TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
MIN_REGION_FRACTION = 0.0005  # the fusion's default minimum region (fraction of the photo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=CARDD_SEGMENTER)
    ap.add_argument("--class-weights", default=None, help="The run's class weights, comma-separated (default: read "
                    "from runs/cardd_fpn96.log, where the trainer logged them).")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "cardd", help="Built CarDD (with valid/).")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--write", type=Path, default=None, metavar="OUT.safetensors",
                    help="A new weights file with the chosen logit_bias in its metadata (never --weights itself).")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cardd_calibration.json",
                    help="Where the table goes (another model's calibration: not over the shipped one's).")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    bf16 = use_bf16("auto")
    if args.class_weights:
        w = np.array([float(v) for v in args.class_weights.split(",")], np.float64)
    else:  # the trainer logs the median-frequency weights it used
        line = next(l for l in (REPO / "runs" / "cardd_fpn96.log").read_text().splitlines() if "class weights" in l)
        w = np.array(json.loads(line.split("class weights", 1)[1].strip()), np.float64)
    model = load_segmenter(args.weights)
    model.logit_bias = {}  # calibrate from the raw logits
    ds = CocoSegmentationDataset([str(annotation_file(str(args.data), "val"))], "cardd_damage")
    idx = np.random.default_rng(0).permutation(len(ds))[:args.images]
    recipe = REPO / "runs" / "recipes" / "damaged.csv"
    probes = [(recipe.parent / r["file"]).resolve() for r in csv.DictReader(recipe.open())
              if r["label"] == "undamaged" and r["split"] == "val"]
    probes = [probes[i] for i in np.random.default_rng(0).permutation(len(probes))[:args.probes]]
    n = 7
    cms = {t: np.zeros((n, n), np.int64) for t in TAUS}
    fp = {t: 0 for t in TAUS}
    adj = torch.tensor(-np.log(w), dtype=torch.float32).view(1, -1, 1, 1)

    def logits_of(image):
        x = to_input_tensor(image, 640)
        with inference_context(bf16):
            out = model.backbone(x).features
            lg = model.decode(out, (x.shape[-2] // 4, x.shape[-1] // 4), ["damage"])["damage"]
        return lg.float()

    for k, i in enumerate(idx):
        image, gt, _ = ds.load(int(i))
        lg = logits_of(image)
        g = torch.from_numpy(gt)[None, None].float()
        g = F.interpolate(g, size=lg.shape[-2:], mode="nearest")[0, 0].long()
        for t in TAUS:
            cms[t] += confusion_matrix((lg + t * adj).argmax(1)[0], g, n)
        if (k + 1) % 50 == 0:
            print(f"  valid {k + 1}/{len(idx)}", flush=True)
    for p in probes:
        lg = logits_of(load_image(p))
        for t in TAUS:
            lab = (lg + t * adj).argmax(1)[0]
            fp[t] += int((lab > 0).float().mean() >= MIN_REGION_FRACTION)
    rows = []
    for t in TAUS:
        cm = cms[t]
        b = np.array([[cm[0, 0], cm[0, 1:].sum()], [cm[1:, 0].sum(), cm[1:, 1:].sum()]])
        rows.append({"tau": t, "binary_iou": round(float(iou_from_confusion(b)[1]), 4), "miou": round(miou(cm), 4),
                     "probe_share_with_damage": round(fp[t] / max(1, len(probes)), 4)})
        print(rows[-1])
    best = max(rows, key=lambda r: r["binary_iou"])
    bias = [round(float(v), 6) for v in (best["tau"] * -np.log(w))]
    res = {"machine": cpu_info(), "precision": resolve_precision("auto"), "class_weights": w.tolist(),
           "valid_images": len(idx), "probe_images": len(probes), "rows": rows, "chosen_tau": best["tau"],
           "logit_bias": bias, "rule": "largest binary damage IoU on the CarDD valid subset (stride-4 maps)"}
    out = args.out
    write_results(out, res, indent=2)
    print(f"chosen tau {best['tau']}: bias {bias}; wrote {out}")
    if args.write:
        if args.write.resolve() == args.weights.resolve():
            sys.exit(f"--write {args.write}: that is the input weights file; write a new file (calibration never "
                     "rewrites a weights file in place)")
        with safe_open(str(args.weights), framework="pt") as f:
            meta = dict(f.metadata() or {})
        meta["logit_bias"] = json.dumps({"damage": bias})
        meta["logit_bias_rule"] = f"tau {best['tau']} x -log(class weights), chosen on CarDD valid (bench/calibration/cardd_calibrate.py)"
        args.write.parent.mkdir(parents=True, exist_ok=True)
        save_file(load_file(str(args.weights)), str(args.write), metadata=meta)
        print(f"wrote {args.write}: {args.weights.name}'s tensors with the chosen logit_bias")


if __name__ == "__main__":
    main()
