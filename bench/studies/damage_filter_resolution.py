"""Damage filter and photo size: low-resolution training views, chosen on a validation split that
can see the resolution cue.

Why: the filter misses its 0.93 target on car_parts (DSMLR) test photos. Every undamaged DSMLR
training and validation photo is 512 px, most VDS damage photos are ~259 px, and the DSMLR testset
holds photos of many sizes; the plain validation split cannot see that shortcut. ``val_lowres`` is
the same validation photos, 2x down- and up-sampled (the ``lowres`` view): a filter that calls an
undamaged car "damaged" because the photo is small fails there.

Protocol: the shipped recipe (focal loss, MLP 256, weighted sampling, early stopping on validation
loss) with the product trainer (`carcheck train classifier`), training views {photo+mirror,
+ low-resolution copy of the photo, + low-resolution copies of photo and mirror image ("x2": half of
the training draws are low-resolution), + a 3x downsampled copy} x the validation loss that drives
early stopping, the LR schedule and the kept epoch {the focal training loss ("train"), plain
cross-entropy ("ce")} x seeds {0, 1, 2}. Selection rule,
fixed before the test numbers of these runs were read: the highest mean over seeds of the worst
per-source accuracy on val and val_lowres (the target is "every source"). Test: the recipe's
fixed test split.
Caveat: the "ce" criterion was added to this comparison after exploratory runs (outside the
repository) whose validation and test columns had been read; the rule itself was not changed.

Run: python bench/studies/damage_filter_resolution.py [--data ../shared/data]
Prints tables; writes bench/results/damage_filter_resolution.json. With ``--longest 256
--view-sets photo+mirror,photo+mirror+lowres --val-losses train
--out bench/results/damage_filter_resolution_256px.json``:
the filter on its own 256 px pass instead of the shared 512 px one (every photo equally soft).
Needs cached features (computed on first use; ~0.1 s per photo and view on 2 cores).
"""

from __future__ import annotations

import sys
import argparse
import itertools
import json
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import torch
from rich.console import Console
from rich.table import Table

from carcheck.data.labels import read_labels, write_label_csv
from carcheck.data.recipes import build_recipe
from carcheck.evaluate.classifier import per_source_accuracy
from carcheck.models.classifier import load_head
from carcheck.models.features import FeatureCache
from carcheck.train.classifier import ClassifierTrainConfig, train_classifier

VIEWS = {"photo+mirror": ("full", "hflip"), "photo+mirror+lowres": ("full", "hflip", "lowres"),
         "photo+mirror+lowres x2": ("full", "hflip", "lowres", "lowres_hflip"),
         "photo+mirror+lowres x2+vlowres": ("full", "hflip", "lowres", "lowres_hflip", "vlowres")}
SEEDS = (0, 1, 2)
#: evaluation splits: (recipe split, view of the photo)
EVAL = {"val": ("val", "full"), "val_lowres": ("val", "lowres"), "test": ("test", "full")}
console = Console(width=170)


def per_source(prob: torch.Tensor, y: torch.Tensor, sources: list[str]) -> dict[str, float]:
    """Accuracy overall (``all``) and per source of class probabilities ``(N, 2)``."""
    pred = prob.argmax(1)
    return {"all": float((pred == y).float().mean()), **per_source_accuracy(pred, y, sources)}


def worst_source(rec: dict) -> float:
    """Selection score of one run: the lowest per-source accuracy over val and val_lowres."""
    return min(v for s in ("val", "val_lowres") for k, v in rec[s].items() if k != "all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "feature_cache"))
    ap.add_argument("--view-sets", default=",".join(VIEWS), help="subset of the training view sets to run")
    ap.add_argument("--val-losses", default="train,ce",
                    help="validation losses for early stopping to compare: train (focal, as trained) and/or ce")
    ap.add_argument("--longest", type=int, default=512, help="input size (longer side, px) of the filter's pass")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "damage_filter_resolution.json")
    args = ap.parse_args()
    view_sets = {k: VIEWS[k] for k in args.view_sets.split(",")}
    val_losses = args.val_losses.split(",")
    torch.set_num_threads(2)
    csv_path = write_label_csv(build_recipe("damaged", args.data), ROOT / "runs" / "recipes" / "damaged.csv")
    rows = read_labels(csv_path)
    results: dict = {"selection_rule": "max over configs of mean over seeds of min per-source accuracy on val and "
                                       "val_lowres", "longest": args.longest,
               "val_losses": val_losses, "runs": {}, "configs": {}, "ensembles": {}}
    cache = FeatureCache(args.cache, longest=args.longest)
    feats = {}
    for name, (split, view) in EVAL.items():  # evaluation features, read once
        sel = [r for r in rows if r.split == split]
        f, ok, _ = cache.get_many([r.path for r in sel], (view,))
        feats[name] = (f[:, 0], [sel[i] for i in ok])
    with tempfile.TemporaryDirectory() as tmp:
        for (vname0, views), val_loss in itertools.product(view_sets.items(), val_losses):
            vname = vname0 + ("" if val_loss == "train" else f" | {val_loss} val loss")
            probs = {s: [] for s in EVAL}
            recs = []
            for seed in SEEDS:
                cfg = ClassifierTrainConfig(data=str(csv_path), task="damaged", out=f"{tmp}/{vname0}_{val_loss}_{seed}",
                                            cache_dir=args.cache, views=views, seed=seed, longest=args.longest,
                                            val_loss=val_loss)
                head, info = load_head(train_classifier(cfg, log=lambda m: None) / "best.safetensors")
                rec = {}
                for s in EVAL:
                    f, sel = feats[s]
                    with torch.no_grad():
                        p = head.head(f).softmax(1)
                    y = torch.tensor([info.classes.index(r.label) for r in sel])
                    probs[s].append((p, y, [r.source for r in sel]))
                    rec[s] = per_source(p, y, [r.source for r in sel])
                rec["selection_score"] = worst_source(rec)
                recs.append(rec)
                results["runs"][f"{vname}|{seed}"] = rec
                console.print(f"{vname} seed {seed}: score {rec['selection_score']:.3f}; test "
                              + ", ".join(f"{k} {v:.3f}" for k, v in rec["test"].items()))
            results["configs"][vname] = {
                "selection_score_mean": sum(r["selection_score"] for r in recs) / len(recs),
                **{s: {k: sum(r[s][k] for r in recs) / len(recs) for k in recs[0][s]} for s in EVAL}}
            results["ensembles"][vname] = {
                s: per_source(torch.stack([p for p, _, _ in probs[s]]).mean(0), probs[s][0][1], probs[s][0][2])
                for s in EVAL}
    results["selected"] = max(results["configs"], key=lambda k: results["configs"][k]["selection_score_mean"])
    keys = list(next(iter(results["configs"].values()))["test"])
    table = Table(title=f"damage filter: mean accuracy over 3 seeds (focal, MLP 256, {args.longest} px; "
                        "'ce val loss': early stopping on validation cross-entropy instead of the focal loss)")
    for c in ["training views", "score", "split", *keys]:
        table.add_column(c)
    for name, m in results["configs"].items():
        for s in EVAL:
            table.add_row(name + (" (selected)" if name == results["selected"] else ""),
                          f"{m['selection_score_mean']:.3f}", s, *[f"{m[s][k]:.3f}" for k in keys])
    console.print(table)
    table = Table(title="3-seed ensembles (mean probabilities), test split")
    for c in ["training views", *keys]:
        table.add_column(c)
    for name, e in results["ensembles"].items():
        table.add_row(name, *[f"{e['test'][k]:.3f}" for k in keys])
    console.print(table)
    write_results(args.out, results, indent=1)
    console.print(f"saved {args.out}")


if __name__ == "__main__":
    main()
