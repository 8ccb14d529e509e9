"""Image-level classifier benchmark (issue: presence, damaged/undamaged, severity, OOD, Grad-CAM).

Held-out data: each recipe's fixed test split (``carcheck dataset recipe NAME``: seeded,
stratified; car_parts/testset and lensor's test split stay test). Heads: the shipped files.
Reports accuracy, macro P/R/F1, confusion and per-source accuracy; for the damage filter also a
leave-one-source-out run (train without a source, test on it: does the filter rely on the photo
source?) and its per-source accuracy on the test photos at half resolution (does photo size
decide?); OOD AUROC (max logit, MSP) of each closed-set classifier against coco128 photos without
a vehicle, and of the presence head; ms per image of each head on top of the shared backbone
pass (median of 200 runs, 2 threads) and of one Grad-CAM map.

Run: python bench/accuracy/classifiers.py [--data ../shared/data]
Prints tables; writes bench/results/classifiers.json.
"""

from __future__ import annotations

import sys
import argparse
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import torch
from rich.console import Console
from rich.table import Table

from _common import head_ms, median_time  # noqa: E402  (bench/ is on sys.path: see the top)
from carcheck.data.labels import read_labels, write_label_csv
from carcheck.data.recipes import build_recipe
from carcheck.evaluate.classifier import evaluate_classifier, head_outputs, ood_auroc, ood_score, per_source_accuracy
from carcheck.models.classifier import SHIPPED_CLASSIFIERS, load_head


def _median_ms(fn, runs=200, warmup=10):
    return 1000 * median_time(fn, runs, warmup)


TARGETS = {"presence_accuracy": 0.97, "damaged_accuracy_every_source": 0.93, "severity_accuracy": 0.70,
           "ood_auroc_no_vehicle": 0.95, "head_ms_per_image": 30.0}
console = Console()




def recipes(data: Path, out: Path) -> dict[str, Path]:
    paths = {}
    for name in ("presence", "damaged", "severity", "make_model", "unknown_vehicles"):
        paths[name] = write_label_csv(build_recipe(name, data), out / f"{name}.csv")
    rows = read_labels(paths["presence"])
    ood = [r for r in rows if r.label == "no_vehicle" and r.split == "test"]
    paths["ood_test"] = write_label_csv(ood, out / "ood_test.csv")
    return paths


def leave_one_source_out(csv: Path, cache: str) -> dict:
    """Damage filter trained without one source (the shipped head's recipe: loss, views, validation
    loss) and tested on that source's test photos."""
    import dataclasses
    import tempfile

    from carcheck.train.classifier import ClassifierTrainConfig, train_classifier

    head, info = load_head(SHIPPED_CLASSIFIERS["damaged"])
    rows = read_labels(csv)
    res = {}
    for src in sorted({r.source for r in rows}):
        with tempfile.TemporaryDirectory() as tmp:
            keep = [r for r in rows if r.source != src]
            test = [dataclasses.replace(r, split="test") for r in rows if r.source == src and r.split == "test"]
            p = write_label_csv(keep + test, Path(tmp) / "loso.csv")
            # the left-out source's photos are only in the test split: never seen in training or validation
            keep_csv = write_label_csv(keep, Path(tmp) / "train.csv")
            cfg = ClassifierTrainConfig(data=str(keep_csv), task="damaged", out=str(Path(tmp) / "run"), cache_dir=cache,
                                        hidden=info.hidden, loss=info.extra.get("loss", "focal"),
                                        views=tuple(info.extra.get("views", ("full", "hflip"))),
                                        val_loss=info.extra.get("val_loss", "train"))
            run = train_classifier(cfg, log=lambda m: None)
            r = evaluate_classifier(run / "best.safetensors", p, "test", cache_dir=cache)
            res[src] = {"accuracy": r["per_source_accuracy"][src], "n": sum(1 for x in test)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "feature_cache"))
    ap.add_argument("--no-loso", action="store_true", help="skip the leave-one-source-out runs")
    args = ap.parse_args()
    torch.set_num_threads(2)
    paths = recipes(args.data, ROOT / "runs" / "recipes")
    results: dict = {"targets": TARGETS, "heads": {}}
    for task in ("presence", "damaged", "severity"):
        r = evaluate_classifier(SHIPPED_CLASSIFIERS[task], paths[task], "test", paths["ood_test"], args.cache)
        results["heads"][task] = r
        t = Table(title=f"{task}: test split, {r['n']} photos", title_justify="left")
        for c in ("class", "precision", "recall", "F1", "support"):
            t.add_column(c)
        for c, m in r["per_class"].items():
            t.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
        t.add_row("accuracy", f"{r['accuracy']:.3f}", "", f"macro {r['macro_f1']:.3f}", "")
        for s, a in r["per_source_accuracy"].items():
            t.add_row(f"  source {s}", f"{a:.3f}", "", "", "")
        console.print(t)
        console.print(f"  confusion (rows = true {r['classes']}): {r['confusion']}")
        console.print(f"  OOD vs coco128 no-vehicle test photos: AUROC max logit {r['ood']['auroc_max_logit']:.3f}, "
                      f"MSP {r['ood']['auroc_msp']:.3f}")
    # the damage filter on the same test photos at half resolution (the ``lowres`` view: a 2x down- and
    # up-sampled input, as a ~256 px photo looks at 512 px): does photo size decide "damaged"?
    from carcheck.models.features import FeatureCache

    dmg_head, dmg_info = load_head(SHIPPED_CLASSIFIERS["damaged"])
    rows = [r for r in read_labels(paths["damaged"]) if r.split == "test"]
    feats, ok, _ = FeatureCache(args.cache).get_many([r.path for r in rows], ("lowres",))
    with torch.no_grad():
        pred = dmg_head.head(feats[:, 0]).argmax(1)
    y = torch.tensor([dmg_info.classes.index(rows[i].label) for i in ok])
    results["damaged_test_half_resolution"] = per_source_accuracy(pred, y, [rows[i].source for i in ok])
    console.print("damage filter, test photos at half resolution: " + ", ".join(
        f"{s} {a:.3f}" for s, a in results["damaged_test_half_resolution"].items()))
    # presence head as the out-of-scope rule: P(vehicle) over all car test photos vs no-vehicle photos
    rows = [r for r in read_labels(paths["presence"]) if r.split == "test"]
    logits, ok, _, info = head_outputs(SHIPPED_CLASSIFIERS["presence"], [r.path for r in rows], args.cache)
    pv = logits.softmax(1)[:, info.classes.index("vehicle")]
    lab = [rows[i].label for i in ok]
    ids = [float(p) for p, l in zip(pv, lab) if l == "vehicle"]
    oods = [float(p) for p, l in zip(pv, lab) if l == "no_vehicle"]
    results["out_of_scope"] = {"score": "presence head P(vehicle)", "auroc": ood_auroc(ids, oods),
                               "n_in": len(ids), "n_out": len(oods),
                               "in_kept_at_0.5": sum(p >= 0.5 for p in ids) / len(ids),
                               "out_rejected_at_0.5": sum(p < 0.5 for p in oods) / len(oods)}
    console.print(f"out of scope (presence P(vehicle)): AUROC {results['out_of_scope']['auroc']:.3f} "
                  f"({len(ids)} car photos vs {len(oods)} no-vehicle photos)")
    # Vaze et al.: max logit of the closed-set 32-model classifier (linear head) as the OOD score
    mm = [r for r in read_labels(paths["make_model"]) if r.split == "test"]
    unk = [r for r in read_labels(paths["unknown_vehicles"]) if r.split == "test"]
    a, _, _, info = head_outputs(SHIPPED_CLASSIFIERS["make_model_ood"], [r.path for r in mm], args.cache)
    b, okb, _, _ = head_outputs(SHIPPED_CLASSIFIERS["make_model_ood"], [r.path for r in unk], args.cache)
    sa, sb = ood_score(a).tolist(), ood_score(b).tolist()
    nov = [x for x, i in zip(sb, okb) if unk[i].source == "coco128"]
    cars = [x for x, i in zip(sb, okb) if unk[i].source != "coco128"]
    t = info.ood["threshold"]
    results["make_model_ood"] = {"auroc_vs_no_vehicle": ood_auroc(sa, nov), "auroc_vs_unknown_cars": ood_auroc(sa, cars),
                                 "threshold": t, "in_kept": sum(x >= t for x in sa) / len(sa),
                                 "out_rejected": sum(x < t for x in sb) / len(sb), "n_in": len(sa),
                                 "n_no_vehicle": len(nov), "n_unknown_cars": len(cars)}
    console.print(f"make/model max logit (OOD): AUROC {results['make_model_ood']['auroc_vs_no_vehicle']:.3f} vs no-vehicle "
                  f"photos, {results['make_model_ood']['auroc_vs_unknown_cars']:.3f} vs car photos of unknown models")
    if not args.no_loso:
        results["damaged_leave_one_source_out"] = leave_one_source_out(paths["damaged"], args.cache)
        t = Table(title="damage filter, leave one source out (trained without it)", title_justify="left")
        t.add_column("left-out source")
        t.add_column("accuracy")
        t.add_column("n")
        for s, v in results["damaged_leave_one_source_out"].items():
            t.add_row(s, f"{v['accuracy']:.3f}", str(v["n"]))
        console.print(t)
    # speed: each head on the pooled vector of the shared pass; the pass itself for reference
    from carcheck.models.backbone import build_backbone, inference_context

    bb = build_backbone("lite0")
    x = torch.rand(1, 3, 384, 512).contiguous(memory_format=torch.channels_last)

    def backbone_pass():
        with inference_context():
            bb(x, with_pooled=True)

    speed = {"backbone_pass_ms_512x384": _median_ms(backbone_pass, runs=20, warmup=3), **head_ms(SHIPPED_CLASSIFIERS)}
    from carcheck.models.explain import grad_cam

    speed["gradcam_ms_512x384"] = _median_ms(lambda: grad_cam(bb, dmg_head, x, 0), runs=5, warmup=1)
    results["speed"] = speed
    console.print("speed (2 threads): " + ", ".join(f"{k} {v:.2f}" for k, v in speed.items()))
    dmg = results["heads"]["damaged"]["per_source_accuracy"]
    results["targets_met"] = {
        "presence_accuracy": results["heads"]["presence"]["accuracy"] >= TARGETS["presence_accuracy"],
        "damaged_accuracy_every_source": min(dmg.values()) >= TARGETS["damaged_accuracy_every_source"],
        "severity_accuracy": results["heads"]["severity"]["accuracy"] >= TARGETS["severity_accuracy"],
        "ood_auroc_no_vehicle (presence head)": results["out_of_scope"]["auroc"] >= TARGETS["ood_auroc_no_vehicle"],
        "ood_auroc_no_vehicle (make/model max logit)": results["make_model_ood"]["auroc_vs_no_vehicle"]
        >= TARGETS["ood_auroc_no_vehicle"],
        "head_ms_per_image": max(v for k, v in speed.items() if k.endswith("_head_ms")) <= TARGETS["head_ms_per_image"],
    }
    console.print(results["targets_met"])
    out = ROOT / "bench" / "results" / "classifiers.json"
    write_results(out, results, indent=1, default=str)
    console.print(f"saved {out}")


if __name__ == "__main__":
    main()
