"""Make/model over all 196 Stanford Cars classes (issue 30 item 1): held-out accuracy, per make, the
confusions that matter, the open-set rule.

Data: the 196-class set built by ``python scripts/build_stanford196.py GIT_DIR data/car_models/stanford196``
(``../shared/data/car_models/stanford196/README.md``: the shared set's held-out photos are left out),
split by the ``make_model196`` recipe (80/10/10 per class, seed 0, near-duplicates on one side).

Reported, on the recipe's **test** split, through the assessment's own path (photo at 512 px on its
longer side, then the model's input size; precision as the assessment resolves it):
- model top-1 / top-5 with an exact binomial 95% CI for top-1; make top-1 / top-5 (a make's
  probability is the sum of its models', :func:`carcheck.data.taxonomy.make_of`);
- per make: photos, model top-1, make top-1;
- the errors: share with the right make (a sibling model), share that differ only in the year
  ("adjacent years": same make, model and body), the most frequent confusions;
- open set (the ``make_model_ood`` head, max logit): AUROC of Stanford test photos against the
  ``unknown_vehicles`` recipe's test photos (other car photos, no-vehicle photos), and the kept /
  rejected fractions at the threshold stored in the head (chosen on validation photos);
- ms per photo of the model's own backbone pass (2 threads).
Published reference: EfficientNet-B7 fine-tuned on the whole Stanford train split (8,144 photos, official
test split) reaches 0.947 top-1 (Tan & Le, "EfficientNet", ICML 2019, Table 5): a model ~13x the size of
Lite0 at 600 px, trained with GPU schedules; ours is Lite0 at 256x320 px on ~6,400 photos, trained on 2 CPU cores.

Run: python bench/accuracy/make_model.py [--data data] [--head FILE] [--ood-head FILE]
Prints tables; writes bench/results/make_model.json.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, ROOT, head_ms, write_results  # noqa: E402

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy.stats import binomtest  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from carcheck.data.recipes import build_recipe  # noqa: E402
from carcheck.data.taxonomy import make_of  # noqa: E402
from carcheck.evaluate.classifier import head_outputs, ood_score, topk_accuracy  # noqa: E402
from carcheck.models.classifier import SHIPPED_CLASSIFIERS, load_head  # noqa: E402

TARGETS = {"model_top1": 0.85}
REFERENCE = {"EfficientNet-B7 fine-tuned, Stanford test split (Tan & Le 2019, Table 5)": 0.947,
             "carcheck 32-class model on its 32-class test split (2026-11-22)": 0.816}
console = Console(markup=False)


def _without_year(c: str) -> str:
    return c.rsplit("_", 1)[0] if c.rsplit("_", 1)[-1].isdigit() else c


def make_model_metrics(logits: torch.Tensor, y: torch.Tensor, classes: list[str]) -> dict:
    """Top-k, per-make and confusion figures of ``logits (N, C)`` against class indices ``y (N,)``."""
    makes = sorted({make_of(c) for c in classes})
    to_make = torch.tensor([makes.index(make_of(c)) for c in classes])
    pm = torch.zeros(len(logits), len(makes)).index_add_(1, to_make, logits.softmax(1))
    ym = to_make[y]
    pred = logits.argmax(1)
    k = int((pred == y).sum())
    ci = binomtest(k, len(y)).proportion_ci(0.95, method="exact")
    per_make = {}
    for mi, m in enumerate(makes):
        sel = ym == mi
        if sel.any():
            per_make[m] = {"n": int(sel.sum()), "model_top1": float((pred[sel] == y[sel]).float().mean()),
                           "make_top1": float((pm[sel].argmax(1) == mi).float().mean())}
    wrong = (pred != y).nonzero().flatten().tolist()
    pairs = Counter((classes[int(y[i])], classes[int(pred[i])]) for i in wrong)
    same_make = sum(make_of(a) == make_of(b) for (a, b), n in pairs.items() for _ in range(n))
    years = sum(_without_year(a) == _without_year(b) for (a, b), n in pairs.items() for _ in range(n))
    return {"n": len(y), "models": len(classes), "makes": len(makes),
            "model_top1": k / len(y), "model_top1_ci95": [ci.low, ci.high], "model_top5": topk_accuracy(logits, y, 5),
            "make_top1": topk_accuracy(pm, ym, 1), "make_top5": topk_accuracy(pm, ym, 5),
            "errors": len(wrong), "errors_same_make": same_make, "errors_adjacent_years": years,
            "top_confusions": [{"true": a, "predicted": b, "n": n} for (a, b), n in pairs.most_common(15)],
            "per_make": per_make}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="root holding car_models/stanford196 (built)")
    ap.add_argument("--shared", type=Path, default=DATA, help="../shared/data (unknown_vehicles photos)")
    ap.add_argument("--head", type=Path, default=SHIPPED_CLASSIFIERS["make_model"])
    ap.add_argument("--ood-head", type=Path, default=SHIPPED_CLASSIFIERS.get("make_model_ood"))
    ap.add_argument("--cache", default=str(ROOT / "runs" / "feature_cache"))
    ap.add_argument("--out", default="make_model.json")
    a = ap.parse_args()
    torch.set_num_threads(2)
    rows = [r for r in build_recipe("make_model196", a.data) if r.split == "test"]
    head, info = load_head(a.head)
    logits, ok, bad, _ = head_outputs((head, info), [r.path for r in rows], a.cache)
    y = torch.tensor([info.classes.index(rows[i].label) for i in ok])
    res = make_model_metrics(logits, y, list(info.classes))
    res.update(file=str(a.head.relative_to(ROOT) if a.head.is_relative_to(ROOT) else a.head), unreadable=bad,
               input_size=info.extra.get("input_size"), flip_tta=info.extra.get("flip_tta"))

    t = Table("metric", "value", "target / reference", title=f"make/model, {res['models']} classes, test split (n={res['n']})")
    t.add_row("model top-1 (95% CI)", f"{res['model_top1']:.3f} ({res['model_top1_ci95'][0]:.3f}-{res['model_top1_ci95'][1]:.3f})",
              f">= {TARGETS['model_top1']}")
    t.add_row("model top-5", f"{res['model_top5']:.3f}", "")
    t.add_row(f"make top-1 / top-5 ({res['makes']} makes)", f"{res['make_top1']:.3f} / {res['make_top5']:.3f}", "")
    t.add_row("errors with the right make / differing only in year",
              f"{res['errors_same_make']} / {res['errors_adjacent_years']} of {res['errors']}", "")
    for k, v in REFERENCE.items():
        t.add_row(f"reference: {k}", "", f"{v:.3f}")
    console.print(t)
    pm = Table("make", "n", "model top-1", "make top-1", title="per make (test split)")
    for m, v in sorted(res["per_make"].items(), key=lambda kv: kv[1]["model_top1"]):
        pm.add_row(m, str(v["n"]), f"{v['model_top1']:.2f}", f"{v['make_top1']:.2f}")
    console.print(pm)
    ct = Table("true", "predicted", "n", title="most frequent confusions")
    for c in res["top_confusions"][:10]:
        ct.add_row(c["true"], c["predicted"], str(c["n"]))
    console.print(ct)

    if a.ood_head is not None and a.ood_head.is_file():
        ood_head, ood_info = load_head(a.ood_head)
        unknown = [r for r in build_recipe("unknown_vehicles", a.shared) if r.split == "test"]
        s_in, _, _, _ = head_outputs((ood_head, ood_info), [rows[i].path for i in ok], a.cache)
        s_out, ok_out, _, _ = head_outputs((ood_head, ood_info), [r.path for r in unknown], a.cache)
        s_in, s_out = ood_score(s_in), ood_score(s_out)
        thr = ood_info.ood_threshold("auto") if hasattr(ood_info, "ood_threshold") else ood_info.ood["threshold"]
        by_source = {}
        for src in sorted({unknown[i].source for i in ok_out}):
            sel = torch.tensor([unknown[i].source == src for i in ok_out])
            by_source[src] = {"n": int(sel.sum()), "rejected": float((s_out[sel] < thr).float().mean()),
                              "auroc": float(roc_auc_score([1] * len(s_in) + [0] * int(sel.sum()),
                                                           torch.cat([s_in, s_out[sel]]).tolist()))}
        res["open_set"] = {"head": str(a.ood_head.relative_to(ROOT) if a.ood_head.is_relative_to(ROOT) else a.ood_head),
                           "classes": len(ood_info.classes), "threshold": thr,
                           "stanford_kept": float((s_in >= thr).float().mean()),
                           "unknown_rejected": float((s_out < thr).float().mean()),
                           "auroc_all_unknown": float(roc_auc_score([1] * len(s_in) + [0] * len(s_out),
                                                                    torch.cat([s_in, s_out]).tolist())),
                           "by_source": by_source}
        o = res["open_set"]
        console.print(f"open set ({o['classes']}-class OOD head, max logit >= {thr:.3f}): Stanford test kept "
                      f"{o['stanford_kept']:.3f}, unknown rejected {o['unknown_rejected']:.3f}, AUROC {o['auroc_all_unknown']:.3f}; "
                      + ", ".join(f"{k} rejected {v['rejected']:.2f} (n={v['n']}, AUROC {v['auroc']:.3f})"
                                  for k, v in by_source.items()))
    res["speed"] = head_ms({"make_model": a.head})
    console.print(f"ms per photo (own backbone pass, 2 threads): {res['speed']}")
    res["targets"] = TARGETS
    res["reference"] = REFERENCE
    console.print(f"wrote {write_results(a.out, res, indent=1, default=str)}")


if __name__ == "__main__":
    main()
