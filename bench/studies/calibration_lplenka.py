"""Study (issue 26, item 4): does P(part damaged) calibrate once one-photo cases with part-level damage labels join
the few damaged parts of the real multi-photo cases?

``bench/cases.py --calibrate`` fits P(part damaged) (:mod:`carcheck.pipeline.confidence`) on the judged per-part
findings of the dev, extra and demo cases: about 80 findings of which only 13-14 lie on damaged parts, and the
leave-one-case-out ECE swings between 0.13 and 0.21 from one run to the next. The lplenka COCO car damage photos
(68 web photos of damaged cars, train + val; parts and damage annotated on the same image;
``../shared/data/car_damage/coco_car_damage_lplenka``) are assessed here as one-photo cases; a per-part finding
is labelled by the lplenka part it maps to (DSMLR -> lplenka, ``carcheck.data.taxonomy``: a light is a
"headlamp", any door a "door"): 1 when a damage polygon touches that lplenka part, 0 when the part is annotated
and untouched, else not judged. The shipped damage model never trained on these photos (CarDD only); the damage
filter did (lensor holds them), so its input ``p_filter`` is left out of every model here.

Leave-one-case-out over all cases (each lplenka photo its own case), the ECE and AUC are reported on the
multi-photo cases' findings (what the target is about) and on all, with and without the lplenka cases in the
training folds, and the review threshold for ``--precision`` is chosen on the training folds as in
``bench/cases.py``.

Run: python bench/cases.py (fills the case cache) && python bench/studies/calibration_lplenka.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
import cases as case_bench  # noqa: E402
from _common import DATA, RESULTS, RUNS, write_results  # noqa: E402

LPLENKA = DATA / "car_damage" / "coco_car_damage_lplenka"


def lplenka_reports(use_cache: bool = True) -> dict[str, dict]:
    """``{photo stem: report dict}`` of every lplenka photo assessed alone (cached under runs/cases_cache)."""
    import carcheck
    from carcheck.pipeline.runner import file_sha256

    pkg = Path(carcheck.__file__).parent
    files = sorted([*(pkg / "models" / "weights").glob("*.safetensors"), *(pkg / "pipeline").glob("*.json"),
                    *pkg.rglob("*.py")])
    key = hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()[:12]
    folder = RUNS / "cases_cache" / f"lplenka-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    out, assessor = {}, None
    for split in ("train", "val"):
        for photo in sorted((LPLENKA / split).glob("*.jpg")):
            name = f"lplenka_{split}_{photo.stem}"
            f = folder / f"{name}.json"
            if use_cache and f.is_file():
                out[name] = json.loads(f.read_text())
                continue
            if assessor is None:
                from carcheck.pipeline.assess import Assessor
                from carcheck.schema.config import AssessConfig

                assessor = Assessor(AssessConfig(threads=2, gradcam=False))
            report, _ = assessor.assess([photo], case_id=name)
            d = report.model_dump(mode="json")
            f.write_text(json.dumps(d))
            out[name] = d
    return out


def lplenka_samples(reports: dict[str, dict]) -> list[tuple[str, str, dict, int]]:
    """``[(case, DSMLR part, features, label)]`` of the lplenka photos' judged per-part findings (module doc)."""
    from carcheck.data.coco_dataset import CocoSegmentationDataset
    from carcheck.data.taxonomy import get_mapping
    from carcheck.evaluate.assessment import damaged_parts_ground_truth

    mapping = get_mapping("dsmlr_parts", "lplenka_parts")
    out = []
    for split in ("train", "val"):
        ann = LPLENKA / split / "COCO_merged_annos.json"
        damaged = {Path(k).stem: v for k, v in damaged_parts_ground_truth(ann).items()}
        ds = CocoSegmentationDataset([ann], "lplenka_parts")
        present = {}
        for i, path in enumerate(ds.image_paths()):
            _, part_mask, _ = ds.load(i)
            present[Path(path).stem] = {ds.taxonomy.classes[v - 1] for v in np.unique(part_mask) if 0 < v < 255}
        for stem in damaged:
            report = reports.get(f"lplenka_{split}_{stem}")
            if report is None:
                continue
            for f in report.get("parts") or []:
                c = mapping.map_name(f["part"])
                if c is None or c not in present[stem]:
                    continue
                out.append((f"lplenka_{split}_{stem}", f["part"], f["features"], int(c in damaged[stem])))
    return out


def loco(samples, features, train_filter, precision: float) -> dict:
    """Leave-one-case-out probabilities and review thresholds (``bench/cases.py``'s fit), for every sample."""
    X = np.array([[s[2][k] for k in features] for s in samples], float)
    y = np.array([s[3] for s in samples])
    case = np.array([s[0] for s in samples])
    p, thr = np.zeros(len(y)), np.zeros(len(y))
    for c in sorted(set(case)):
        tr = (case != c) & np.array([train_filter(s) for s in samples])
        model = case_bench.fit_lr(X[tr], y[tr], features)
        p[case == c] = case_bench.predict(model, X[case == c])
        thr[case == c] = case_bench.choose_threshold(case_bench.predict(model, X[tr]), y[tr], precision)
    return {"p": p, "thr": thr, "y": y, "case": case}


def summary(r: dict, sel: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    from carcheck.evaluate.cases import reliability

    y, p = r["y"][sel], r["p"][sel]
    conf = p >= r["thr"][sel]
    return {"findings": int(sel.sum()), "damaged": int(y.sum()),
            "auc": round(float(roc_auc_score(y, p)), 4) if len(set(y)) == 2 else None,
            "ece": reliability(list(p), list(y))["ece"], "confident": int(conf.sum()),
            "confident_damaged": int(y[conf].sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", type=float, default=0.9)
    ap.add_argument("--out", type=Path, default=RESULTS / "calibration_lplenka.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    cases, _ = case_bench.case_list()
    from carcheck.models.inference import DEFAULT_SEGMENTERS

    multi = case_bench.labelled_samples(
        case_bench.run_set("shipped", [Path(p) for p in DEFAULT_SEGMENTERS], cases, True), cases)
    single = lplenka_samples(lplenka_reports())
    from carcheck.pipeline.confidence import FEATURES

    feats = [f for f in FEATURES if f != "p_filter"]
    samples = multi + single
    is_multi = np.array([not s[0].startswith("lplenka_") for s in samples])
    res = {"features": feats, "precision": args.precision, "multi_photo_findings": len(multi),
           "lplenka_findings": len(single), "lplenka_damaged": int(sum(s[3] for s in single)), "runs": {}}
    for name, flt in (("multi-photo cases only", lambda s: not s[0].startswith("lplenka_")),
                      ("multi-photo + lplenka", lambda s: True)):
        r = loco(samples, feats, flt, args.precision)
        res["runs"][name] = {"on multi-photo findings": summary(r, is_multi),
                             "on lplenka findings": summary(r, ~is_multi), "on all": summary(r, np.ones(len(is_multi), bool))}
    print(f"{len(multi)} multi-photo findings ({sum(s[3] for s in multi)} damaged), {len(single)} lplenka findings "
          f"({res['lplenka_damaged']} damaged); features {feats}")
    for name, r in res["runs"].items():
        for where, s in r.items():
            print(f"trained on {name:<24} scored {where:<24} {s}")
    write_results(args.out, res, indent=1)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
