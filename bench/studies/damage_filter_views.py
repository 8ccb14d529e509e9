"""Damage filter: does the opt-in ``lowres`` training view help the source it fails on?

The damaged/undamaged filter misses its 0.93 target on car_parts (DSMLR) photos: every undamaged
DSMLR training photo is 512 px, most VDS damage photos are ~259 px, and the DSMLR testset holds
photos of many sizes. This bench trains the filter head (frozen features, cached) with and
without the ``lowres`` view for 4 head configurations (focal / CE loss, MLP 256 / linear) and 3
seeds each, and reports per-source accuracy on the fixed validation and test splits: the mean over
the 12 runs of each view setting, and per configuration the 3-seed ensemble (mean probabilities).

Run: python bench/studies/damage_filter_views.py [--data ../shared/data]
Prints tables; writes bench/results/damage_filter_views.json. Needs the cached features of the
recipe's photos (computed on first use; ~0.1 s per photo and view on 2 cores).
"""

from __future__ import annotations

import sys
import argparse
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
from carcheck.evaluate.classifier import head_outputs, per_source_accuracy
from carcheck.train.classifier import ClassifierTrainConfig, train_classifier

VIEWS = {"photo+mirror": ("full", "hflip"), "photo+mirror+lowres": ("full", "hflip", "lowres")}
CONFIGS = [("focal", 256), ("focal", 0), ("ce", 256), ("ce", 0)]
SEEDS = (0, 1, 2)
console = Console(width=160)


def per_source(prob: torch.Tensor, y: torch.Tensor, sources: list[str]) -> dict[str, float]:
    """Accuracy overall (``all``) and per source of class probabilities ``(N, 2)``."""
    pred = prob.argmax(1)
    return {"all": float((pred == y).float().mean()), **per_source_accuracy(pred, y, sources)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "feature_cache"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    csv_path = write_label_csv(build_recipe("damaged", args.data), ROOT / "runs" / "recipes" / "damaged.csv")
    rows = read_labels(csv_path)
    split_rows = {s: [r for r in rows if r.split == s] for s in ("val", "test")}
    results: dict = {"runs": {}, "mean_over_runs": {}, "ensembles": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for vname, views in VIEWS.items():
            for loss, hidden in CONFIGS:
                probs = {s: [] for s in split_rows}
                for seed in SEEDS:
                    cfg = ClassifierTrainConfig(data=str(csv_path), task="damaged", out=f"{tmp}/{vname}_{loss}_{hidden}_{seed}",
                                                cache_dir=args.cache, views=views, loss=loss, hidden=hidden, seed=seed)
                    run = train_classifier(cfg, log=lambda m: None)
                    rec = {}
                    for s, sel in split_rows.items():
                        logits, ok, _, info = head_outputs(run / "best.safetensors", [r.path for r in sel], args.cache)
                        y = torch.tensor([info.classes.index(sel[i].label) for i in ok])
                        p = logits.softmax(1)
                        probs[s].append((p, y, [sel[i].source for i in ok]))
                        rec[s] = per_source(p, y, [sel[i].source for i in ok])
                    results["runs"][f"{vname}|{loss}|{hidden}|{seed}"] = rec
                    console.print(f"{vname} {loss} hidden {hidden} seed {seed}: val {rec['val']['all']:.3f}, test "
                                  + ", ".join(f"{k} {v:.3f}" for k, v in rec["test"].items()))
                results["ensembles"][f"{vname}|{loss}|{hidden}"] = {
                    s: per_source(torch.stack([p for p, _, _ in probs[s]]).mean(0), probs[s][0][1], probs[s][0][2])
                    for s in split_rows}
    for vname in VIEWS:
        runs = [v for k, v in results["runs"].items() if k.startswith(vname + "|")]
        results["mean_over_runs"][vname] = {s: {k: sum(r[s][k] for r in runs) / len(runs) for k in runs[0][s]}
                                            for s in split_rows}
    table = Table(title="damage filter: mean accuracy over 12 runs (4 head configs x 3 seeds)")
    keys = list(results["mean_over_runs"]["photo+mirror"]["test"])
    for c in ["training views", "split", *keys]:
        table.add_column(c)
    for vname, m in results["mean_over_runs"].items():
        for s in split_rows:
            table.add_row(vname, s, *[f"{m[s][k]:.3f}" for k in keys])
    console.print(table)
    table = Table(title="3-seed ensembles (mean probabilities)")
    for c in ["views | loss | hidden", "val all", *[f"test {k}" for k in keys]]:
        table.add_column(c)
    for name, e in results["ensembles"].items():
        table.add_row(name, f"{e['val']['all']:.3f}", *[f"{e['test'][k]:.3f}" for k in keys])
    console.print(table)
    out = ROOT / "bench" / "results" / "damage_filter_views.json"
    write_results(out, results, indent=1)
    console.print(f"saved {out}")


if __name__ == "__main__":
    main()
