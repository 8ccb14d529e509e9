"""CarDD issue item 6: the part model with a partly unfrozen backbone against the frozen one shipped before it.

Both were trained with the shipped part model's recipe (its model card: car_parts/trainingset, 10% held
out, 14 epochs, batch 8, 384 px crops, ce+Dice, AdamW 2e-3, seed 0), differing only in ``--unfreeze``
(the candidate fine-tunes its own copy of the backbone's last stages at 0.1x the learning rate,
:class:`~carcheck.models.segmentation.BackboneTail`). Scored on car_parts/testset (85 photos, longer side
512 px as the assessment runs it), raw and after the assessment's one-end-of-the-car rule
(:func:`carcheck.pipeline.part_ends.consistent_ends`, the shipped k), with the paired bootstrap 95% CI of
the mIoU difference over photos (5,000 resamples), and the ms each adds per 384x512 photo on the shared
pass (2 threads, the assessment's precision, median of 20, timed in this run beside each other).

Run: python bench/studies/parts_designs.py [--candidate FILE]   (about 2 minutes; writes bench/results/parts_designs.json)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import numpy as np
import torch

from _common import median_time  # noqa: E402  (bench/ is on sys.path: see the top)

TEST = DATA / "car_parts" / "testset" / "annotations.json"
#: the frozen part model shipped until this comparison: ``mkdir -p runs/parts_frozen && git show
#: faefe3c:src/carcheck/models/weights/segmenter_parts_lite0.safetensors > runs/parts_frozen/best.safetensors``
SHIPPED = ROOT / "runs" / "parts_frozen" / "best.safetensors"
#: the candidate: runs/parts_unfreeze2/best.safetensors with its fine-tuned stages cast to float16, shipped since
CANDIDATE = ROOT / "src" / "carcheck" / "models" / "weights" / "segmenter_parts_lite0.safetensors"
TARGET = 0.68  # issue 15: parts mIoU on car_parts/testset


def per_image_cms(model, bf16: bool, end_dominance: float | None) -> np.ndarray:
    """(N, 19, 19) confusion matrices on car_parts/testset; the one-end rule applied when given."""
    from carcheck.data.coco_dataset import CocoSegmentationDataset
    from carcheck.data.taxonomy import get_taxonomy
    from carcheck.evaluate.metrics import confusion_matrix
    from carcheck.models.inference import segment
    from carcheck.pipeline.part_ends import consistent_ends

    tax = get_taxonomy("dsmlr_parts")
    names = list(tax.names_with_background)
    ds = CocoSegmentationDataset([str(TEST)], "dsmlr_parts")
    raw, ruled = [], []
    for i in range(len(ds)):
        img, gt, _ = ds.load(i)
        pred = segment(model, img, longest=512, bf16=bf16, tasks=["parts"])["parts"].numpy().argmax(0)
        raw.append(confusion_matrix(pred, gt, len(names)))
        if end_dominance is not None:
            ruled.append(confusion_matrix(consistent_ends(pred, names, end_dominance), gt, len(names)))
    return np.stack(raw), (np.stack(ruled) if ruled else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", type=Path, default=CANDIDATE)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "parts_designs.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    if not TEST.exists():
        sys.exit(f"{TEST} is absent (DSMLR car_parts, ../shared/data)")
    for p in (SHIPPED, args.candidate):
        if not p.is_file():
            sys.exit(f"{p} is missing (see the module's SHIPPED / CANDIDATE for how each is made)")
    from carcheck.data.taxonomy import get_taxonomy
    from carcheck.evaluate.metrics import bootstrap_miou_difference, iou_from_confusion, miou
    from carcheck.models.backbone import build_backbone, inference_context
    from carcheck.models.inference import load_segmenter
    from carcheck.models.runtime import cpu_info, resolve_precision, use_bf16
    from carcheck.schema import FusionConfig

    t0 = time.time()
    bf16 = use_bf16("auto")
    k = FusionConfig().end_dominance
    names = list(get_taxonomy("dsmlr_parts").names_with_background)
    models = {"frozen": load_segmenter(SHIPPED), "candidate": load_segmenter(args.candidate)}
    cms = {n: per_image_cms(m, bf16, k) for n, m in models.items()}
    res = {"machine": cpu_info(), "precision": resolve_precision("auto"), "images": len(cms["frozen"][0]),
           "end_dominance": k, "target_miou": TARGET,
           "models": {n: {"weights": str(p), "unfreeze": models[n].unfreeze} for n, p in
                      (("frozen", SHIPPED), ("candidate", args.candidate))}}
    for j, view in enumerate(("raw", "one_end_rule")):
        a, b = cms["candidate"][j], cms["frozen"][j]
        if a is None:
            continue
        res[view] = {"miou_candidate": round(miou(a.sum(0)), 4), "miou_frozen": round(miou(b.sum(0)), 4),
                     "difference": bootstrap_miou_difference(a, b),
                     "iou_candidate": dict(zip(names, (round(float(v), 4) for v in iou_from_confusion(a.sum(0))))),
                     "iou_frozen": dict(zip(names, (round(float(v), 4) for v in iou_from_confusion(b.sum(0)))))}
    bb = build_backbone("lite0")
    x = torch.rand(1, 3, 384, 512).contiguous(memory_format=torch.channels_last)
    with inference_context():
        feats = bb(x).features
    ms = {}
    for n, m in models.items():
        def run(m=m):
            with inference_context():
                m.decode(feats, (384, 512), ["parts"])
        ms[n] = round(1000 * median_time(run), 1)
    res["added_ms_per_photo"] = ms
    res["wall_s"] = round(time.time() - t0, 1)

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"car_parts/testset ({res['images']} photos): parts mIoU ({res['machine'].get('cpu_model', '?')}, "
                    f"{res['precision']})")
    for c in ("part map", "frozen (shipped until now)", f"candidate (unfreeze {models['candidate'].unfreeze})",
              "difference (95% CI)", "target"):
        t.add_column(c)
    for view in ("raw", "one_end_rule"):
        if view in res:
            r = res[view]
            d = r["difference"]
            t.add_row(view, f"{r['miou_frozen']:.3f}", f"{r['miou_candidate']:.3f}",
                      f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]", f">= {TARGET}")
    t.add_row("adds ms / photo", f"{ms['frozen']:.1f}", f"{ms['candidate']:.1f}", "", "")
    Console(width=160).print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, res, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
