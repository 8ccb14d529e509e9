"""Do the shipped thresholds, calibrated on bf16 outputs, still hold under fp32? (issue 13, item 1)

Every shipped head was trained and every threshold calibrated on a CPU with native bf16, under
bf16 autocast. Precision ``auto`` now runs fp32 on CPUs without native bf16, so each threshold is
re-checked on its own data under both precisions, through the inference path the assessment uses
(:func:`carcheck.evaluate.classifier.head_outputs`):

- presence gate (P(vehicle) < 0.5 -> out of scope): accuracy on the presence recipe's test split;
- damage filter ("clean" when P(undamaged) > 0.9): per-source accuracy on the damaged recipe's
  test split, and the photos whose "clean" verdict flips;
- severity: accuracy on its test split;
- make/model OOD (max logit of the make/model OOD head below its threshold -> "not a known model"): the
  share of validation photos kept (its calibration rule: 95%), the threshold that rule gives
  under fp32, AUROC against the no-vehicle photos;
- same-vehicle verification (cosine distance above the EER threshold of validation photos):
  the EER threshold recomputed under fp32 on the validation pairs, accuracy and the decisions
  that flip on the test pairs;
- the ImageNet vehicle-class gate (used only without a presence head): decisions at its
  calibrated threshold on the presence test photos.

A decision flip is a photo (pair) decided differently by the two precisions at the same threshold.
Run: ``python bench/speed/precision_check.py`` -> table + ``bench/results/precision_check.json``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import numpy as np
import torch

PRECISIONS = ("bf16", "fp32")


def _rows(name: str, split: str | None, root: Path = DATA):
    from carcheck.data.recipes import build_recipe

    rows = build_recipe(name, root)
    return [r for r in rows if split is None or r.split == split]


def _outputs(head_file, paths, precision: str, cache: str):
    from carcheck.evaluate.classifier import head_outputs

    out, ok, bad, info = head_outputs(head_file, paths, cache, precision=precision)
    if bad:
        raise RuntimeError(f"unreadable photos in a shipped recipe: {bad[:3]}")
    return out.float(), info


def classifier_check(task: str, recipe: str, cache: str, extra=None) -> dict:
    """Accuracy (and per-source accuracy) of one shipped classifier head under both precisions."""
    from carcheck.evaluate.classifier import per_source_accuracy
    from carcheck.models.classifier import SHIPPED_CLASSIFIERS

    rows = _rows(recipe, "test")
    res = {"photos": len(rows)}
    preds = {}
    for p in PRECISIONS:
        logits, info = _outputs(SHIPPED_CLASSIFIERS[task], [r.path for r in rows], p, cache)
        y = torch.tensor([info.classes.index(r.label) for r in rows])
        pred = logits.argmax(1)
        preds[p] = (logits, info)
        res[p] = {"accuracy": float((pred == y).float().mean()),
                  "per_source_accuracy": per_source_accuracy(pred, y, [r.source for r in rows])}
    (lb, info), (lf, _) = preds["bf16"], preds["fp32"]
    res["argmax_flips"] = int((lb.argmax(1) != lf.argmax(1)).sum())
    res["max_abs_logit_difference"] = float((lb - lf).abs().max())
    if extra:
        res.update(extra(lb, lf, info))
    return res


def clean_verdict_flips(lb, lf, info) -> dict:
    i = info.classes.index("undamaged")
    cb, cf = lb.softmax(1)[:, i] > 0.9, lf.softmax(1)[:, i] > 0.9
    return {"clean_threshold": 0.9, "clean_verdict_flips": int((cb != cf).sum()), "clean_bf16": int(cb.sum()),
            "clean_fp32": int(cf.sum())}


def presence_flips(lb, lf, info) -> dict:
    i = info.classes.index("vehicle")
    gb, gf = lb.softmax(1)[:, i] < 0.5, lf.softmax(1)[:, i] < 0.5
    return {"presence_threshold": 0.5, "gate_decision_flips": int((gb != gf).sum())}


def make_model_ood(cache: str) -> dict:
    """The OOD head's threshold: share of validation photos kept at the stored threshold, its 5th
    percentile under fp32 (the trainer's rule), AUROC against the no-vehicle photos."""
    from carcheck.evaluate.classifier import ood_auroc
    from carcheck.models.classifier import SHIPPED_CLASSIFIERS

    from carcheck.evaluate.classifier import ood_threshold

    from carcheck.models.classifier import load_head

    n = len(load_head(SHIPPED_CLASSIFIERS["make_model_ood"])[1].classes)  # 196: the set built under data/
    val = [r.path for r in (_rows("make_model196", "val", ROOT / "data") if n > 32 else _rows("make_model", "val"))]
    out_rows = [r.path for r in _rows("presence", None) if r.label == "no_vehicle"]
    unknown = _rows("unknown_vehicles", None)  # the trainer's --ood-data: its val split (or all)
    unknown = [r.path for r in unknown if r.split == "val"] or [r.path for r in unknown]
    res = {"val_photos": len(val), "no_vehicle_photos": len(out_rows), "unknown_vehicle_val_photos": len(unknown)}
    for p in PRECISIONS:
        lv, info = _outputs(SHIPPED_CLASSIFIERS["make_model_ood"], val, p, cache)
        lo, _ = _outputs(SHIPPED_CLASSIFIERS["make_model_ood"], out_rows, p, cache)
        lu, _ = _outputs(SHIPPED_CLASSIFIERS["make_model_ood"], unknown, p, cache)
        mv, mo = lv.max(1).values, lo.max(1).values
        thr = info.ood["threshold"]
        res[p] = {"stored_threshold": thr, "val_kept_at_stored": float((mv >= thr).float().mean()),
                  "threshold_by_trainer_rule": ood_threshold(mv.tolist(), lu.max(1).values.tolist()),
                  "threshold_by_rule_95pct_val_kept": float(np.quantile(mv.numpy(), 0.05)),
                  "no_vehicle_rejected_at_stored": float((mo < thr).float().mean()),
                  "auroc_max_logit": ood_auroc(mv.tolist(), mo.tolist())}
    return res


def verification(cache: str) -> dict:
    """EER threshold on validation pairs and decisions on the test pairs, under both precisions."""
    from carcheck.data.labels import read_labels, write_label_csv
    from carcheck.data.recipes import build_recipe
    from carcheck.evaluate.classifier import head_outputs
    from carcheck.evaluate.classifier import verification_metrics
    from carcheck.models.classifier import SHIPPED_CLASSIFIERS, load_head

    base = DATA / "verification" / "vn_traffic_reid_2cam"
    rows = read_labels(write_label_csv(build_recipe("verification", DATA), ROOT / "runs" / "recipes" / "verification.csv"))
    split = {r.path.name: r.split for r in rows}
    with open(base / "pairs.csv", newline="") as f:
        pairs = list(csv.DictReader(f))
    head, info = load_head(SHIPPED_CLASSIFIERS["verification"])
    res = {"stored_threshold": float(info.threshold)}
    decisions = {}
    for p in PRECISIONS:
        out = {}
        for s in ("val", "test"):
            sel = [q for q in pairs if split[q["file_a"]] == s and split[q["file_b"]] == s]
            files = sorted({q["file_a"] for q in sel} | {q["file_b"] for q in sel})
            emb, ok, bad, _ = head_outputs((head, info), [base / "images" / f for f in files], cache, precision=p)
            e = {files[i]: emb[j] for j, i in enumerate(ok)}
            with torch.no_grad():
                d = head.distance(torch.stack([e[q["file_a"]] for q in sel]), torch.stack([e[q["file_b"]] for q in sel]))
            y = [int(q["same_vehicle"]) for q in sel]
            out[s] = (d.tolist(), y)
        m_val = verification_metrics(*out["val"])
        m_test = verification_metrics(*out["test"], float(info.threshold))
        decisions[p] = np.array(out["test"][0]) <= float(info.threshold)
        res[p] = {"val_pairs": len(out["val"][1]), "eer_threshold_val": m_val.get("eer_threshold"),
                  "test_pairs": len(out["test"][1]), "test_accuracy_at_stored": m_test.get("accuracy"),
                  "test_auc": m_test.get("roc_auc")}
    res["test_decision_flips"] = int((decisions["bf16"] != decisions["fp32"]).sum())
    return res


def imagenet_gate(cache: str) -> dict:
    """Decisions of the ImageNet vehicle-score rule (no presence head) under both precisions."""
    from carcheck.data.images import load_image
    from carcheck.models.backbone import build_backbone, inference_context
    from carcheck.models.inference import to_input_tensor
    from carcheck.pipeline.gate import DEFAULT_VEHICLE_THRESHOLD, vehicle_score

    rows = _rows("presence", "test")
    bb = build_backbone("lite0")
    scores = {p: [] for p in PRECISIONS}
    for r in rows:
        x = to_input_tensor(load_image(r.path), 512)
        for p in PRECISIONS:
            with inference_context(p == "bf16"):
                scores[p].append(float(vehicle_score(bb(x, with_logits=True).logits)[0]))
    sb, sf = (np.array(scores[p]) >= DEFAULT_VEHICLE_THRESHOLD for p in PRECISIONS)
    y = np.array([r.label == "vehicle" for r in rows])
    return {"threshold": DEFAULT_VEHICLE_THRESHOLD, "photos": len(rows), "decision_flips": int((sb != sf).sum()),
            "accuracy_score_only_bf16": float((sb == y).mean()), "accuracy_score_only_fp32": float((sf == y).mean()),
            "note": "the vehicle-score half of the rule alone (the part-coverage half is OR-ed in the assessment)"}


def main() -> None:
    from carcheck.models.runtime import cpu_info

    torch.set_num_threads(2)
    cache = str(ROOT / "runs" / "feature_cache")
    res = {"machine": cpu_info()}
    out = ROOT / "bench" / "results" / "precision_check.json"
    if "--ood-only" in sys.argv:  # re-run only the OOD rule (features cached) into the saved JSON
        saved = json.loads(out.read_text())
        saved["make_model_ood"] = make_model_ood(cache)
        write_results(out, saved, indent=2, default=float)
        print(json.dumps(saved["make_model_ood"], indent=2, default=float))
        return
    res["presence"] = classifier_check("presence", "presence", cache, presence_flips)
    print("presence", res["presence"], flush=True)
    res["damaged"] = classifier_check("damaged", "damaged", cache, clean_verdict_flips)
    print("damaged", res["damaged"], flush=True)
    res["severity"] = classifier_check("severity", "severity", cache)
    res["make_model_ood"] = make_model_ood(cache)
    print("ood", res["make_model_ood"], flush=True)
    res["verification"] = verification(cache)
    print("verification", res["verification"], flush=True)
    res["imagenet_gate"] = imagenet_gate(cache)
    table = [
        ("presence accuracy (test)", res["presence"]["bf16"]["accuracy"], res["presence"]["fp32"]["accuracy"],
         f"{res['presence']['gate_decision_flips']} gate flips"),
        ("damage filter accuracy (test)", res["damaged"]["bf16"]["accuracy"], res["damaged"]["fp32"]["accuracy"],
         f"{res['damaged']['clean_verdict_flips']} 'clean' flips"),
        ("severity accuracy (test)", res["severity"]["bf16"]["accuracy"], res["severity"]["fp32"]["accuracy"],
         f"{res['severity']['argmax_flips']} flips"),
        ("OOD: val kept at stored threshold", res["make_model_ood"]["bf16"]["val_kept_at_stored"],
         res["make_model_ood"]["fp32"]["val_kept_at_stored"], "rule: 0.95"),
        ("OOD: threshold by the trainer's rule", res["make_model_ood"]["bf16"]["threshold_by_trainer_rule"],
         res["make_model_ood"]["fp32"]["threshold_by_trainer_rule"], "fp32 value stored in the head file"),
        ("OOD: threshold by the 95% rule", res["make_model_ood"]["bf16"]["threshold_by_rule_95pct_val_kept"],
         res["make_model_ood"]["fp32"]["threshold_by_rule_95pct_val_kept"],
         f"stored {res['make_model_ood']['bf16']['stored_threshold']:.3f}"),
        ("verification EER threshold (val)", res["verification"]["bf16"]["eer_threshold_val"],
         res["verification"]["fp32"]["eer_threshold_val"], f"stored {res['verification']['stored_threshold']:.4f}"),
        ("verification accuracy (test pairs)", res["verification"]["bf16"]["test_accuracy_at_stored"],
         res["verification"]["fp32"]["test_accuracy_at_stored"], f"{res['verification']['test_decision_flips']} flips"),
        ("ImageNet gate, score-only accuracy", res["imagenet_gate"]["accuracy_score_only_bf16"],
         res["imagenet_gate"]["accuracy_score_only_fp32"], f"{res['imagenet_gate']['decision_flips']} flips"),
    ]
    print(f"\n{'check':40} {'bf16':>8} {'fp32':>8}  note")
    for name, b, f, note in table:
        print(f"{name:40} {b:8.4f} {f:8.4f}  {note}")
    for k, v in res["damaged"]["fp32"]["per_source_accuracy"].items():
        print(f"  damage filter {k}: bf16 {res['damaged']['bf16']['per_source_accuracy'][k]:.3f} fp32 {v:.3f}")
    write_results(out, res, indent=2, default=float)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
