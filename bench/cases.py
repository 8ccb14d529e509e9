"""Case benchmark (issue 26, item 1): the whole-case report on real multi-photo cases, scored against
the cases' expectations files (:mod:`carcheck.evaluate.cases`).

Cases: every folder of the built dev set (``data/cases_dev/<case>``, built by
``../shared/data/cases_dev/build_cases_dev.sh``; expectations in ``$CARCHECK_DATA/cases_dev/expectations``)
the demo case ``cases/salvage_panamera_167111`` (expectations written from its photos,
``cases/expectations/salvage_panamera_167111.json``) and the extra damaged cases of ``bench/cases_extra`` (built
into ``data/cases_extra`` by its build script; summed apart from the dev cases). A case without a built folder is
skipped and counted.

Model sets: ``shipped`` (the package's default weights) and, with ``--candidate NAME=DAMAGE.safetensors``
(repeatable), the same assessment with another damage model; all in one run, so each change shows its
effect. Reports are cached per model set and file SHA-256 under ``runs/cases_cache/`` (``--no-cache`` re-runs).

Decisions scored: ``report`` (each per-part finding's own ``needs_review``, as the report states it) and,
with ``--calibrate``, ``cv`` (issue 26, item 4): P(part damaged) (:mod:`carcheck.pipeline.confidence`) fitted
by logistic regression on the per-part findings the expectations judge (parts in a damaged group: 1, parts
seen clean: 0), leave-one-case-out: each case's parts are scored by a model fitted on the other cases, and
its review threshold is the lowest P reaching ``--precision`` on those other cases. The reliability table
and ECE are of those out-of-case probabilities. The model fitted on all cases is written to
``--model-out`` (a new file; ship it by copying it to src/carcheck/pipeline/part_confidence.json).

Run: python bench/cases.py [--candidate v2=runs/damage_v2/best.safetensors] [--quick]
     (about 2 minutes per model set on 2 cores; writes bench/results/cases.json)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
from _common import DATA, RESULTS, ROOT, RUNS, clock, write_results  # noqa: E402

DEV_BUILT = Path(os.environ.get("CARCHECK_CASES_DEV", ROOT / "data" / "cases_dev"))
DEV_EXP = DATA / "cases_dev" / "expectations"
DEMO = DATA / "cases" / "salvage_panamera_167111"
DEMO_EXP = DATA / "cases" / "expectations" / "salvage_panamera_167111.json"
EXTRA_BUILT = Path(os.environ.get("CARCHECK_CASES_EXTRA", ROOT / "data" / "cases_extra"))
EXTRA_EXP = ROOT / "bench" / "cases_extra" / "expectations"
EXTRA = {p.stem for p in EXTRA_EXP.glob("*.json")}
CACHE = RUNS / "cases_cache"

#: Issue 26's targets on the dev cases.
TARGETS = {"recall_confident": 0.60, "recall_any": 0.85, "confident_in_groups": 0.90, "clean_confident_rate": 0.02,
           "undamaged_cases_with_confident_share": 0.10, "ece": 0.08}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def case_list() -> tuple[list[tuple[str, list[Path], Path]], list[str]]:
    """``([(case, photos, expectations file)], [cases skipped: folder not built])``."""
    out, missing = [], []
    for exp in [*sorted(DEV_EXP.glob("*.json")), *sorted(EXTRA_EXP.glob("*.json"))]:
        folder = (EXTRA_BUILT if exp.stem in EXTRA else DEV_BUILT) / exp.stem
        photos = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if photos:
            out.append((exp.stem, photos, exp))
        else:
            missing.append(exp.stem)
    if DEMO_EXP.is_file() and DEMO.is_dir():
        out.append((DEMO.name, sorted(DEMO.glob("*.png")), DEMO_EXP))
    return out, missing


def run_set(name: str, weights: list[Path], cases, use_cache: bool, log=print, config: dict | None = None) -> dict[str, dict]:
    """Assess every case with one model set (and AssessConfig overrides ``config``); ``{case: report dict}``
    (cached by the SHA-256 of the weights, of every other model / calibration file in the package, of the
    package's source files (a changed default or rule re-assesses) and the overrides)."""
    config = config or {}
    from carcheck.pipeline.runner import file_sha256 as sha256

    import carcheck

    pkg = Path(carcheck.__file__).parent  # every other model / calibration file the assessment loads changes it too
    others = sorted([*(pkg / "models" / "weights").glob("*.safetensors"), *(pkg / "pipeline").glob("*.json"),
                     *pkg.rglob("*.py"), *pkg.rglob("*.yaml")])
    key = hashlib.sha256(("".join(sha256(w) for w in [*weights, *others])
                          + json.dumps(config, sort_keys=True)).encode()).hexdigest()[:12]
    folder = CACHE / f"{name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    reports, assessor = {}, None
    for case, photos, _ in cases:
        f = folder / f"{case}.json"
        if use_cache and f.is_file():
            reports[case] = json.loads(f.read_text())
            continue
        if assessor is None:
            from carcheck.pipeline.assess import Assessor
            try:
                from carcheck.schema.config import AssessConfig
            except ImportError:  # before the schema package
                from carcheck.report.schema import AssessConfig
            assessor = Assessor(AssessConfig(threads=2, gradcam=False, **config), weights=weights)
        (report, _), seconds = clock(assessor.assess, photos, case_id=case)
        d = report.model_dump(mode="json")
        f.write_text(json.dumps(d))
        reports[case] = d
        log(f"  {name}: {case} ({len(photos)} photos) {seconds:.1f} s")
    return reports


def score_set(reports: dict[str, dict], cases) -> dict:
    from carcheck.evaluate.cases import load_expectations, score_case, sum_scores

    per_case = {}
    for case, _, exp_path in cases:
        per_case[case] = score_case(reports[case], load_expectations(exp_path))
    dev = [s for c, s in per_case.items() if c != DEMO.name and c not in EXTRA]
    extra = [s for c, s in per_case.items() if c in EXTRA]
    return {"per_case": per_case, "dev": sum_scores(dev), "extra": sum_scores(extra) if extra else None,
            "all": sum_scores(list(per_case.values())), "demo": per_case.get(DEMO.name)}


def labelled_samples(reports: dict[str, dict], cases) -> list[tuple[str, str, dict, int]]:
    """``[(case, part, features, label)]`` of every judged per-part finding (features as the report states them)."""
    from carcheck.evaluate.cases import load_expectations, part_labels

    out = []
    for case, _, exp_path in cases:
        for f, y in part_labels(reports[case], load_expectations(exp_path)):
            if not f.get("features"):
                raise SystemExit(f"{case}: the report's parts carry no features (older reports): re-run with --no-cache")
            out.append((case, f["part"], f["features"], y))
    return out


def fit_lr(X, y, features):
    """Logistic regression on standardised inputs; returns (mean, scale, coef, intercept)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, float)
    mean, scale = X.mean(0), X.std(0)
    scale[scale < 1e-6] = 1.0
    if len(set(y)) < 2:  # one class only: a constant at the observed rate
        return mean, scale, np.zeros(len(features)), float(np.log((np.mean(y) + 1e-3) / (1 - np.mean(y) + 1e-3)))
    lr = LogisticRegression(C=1.0, max_iter=1000).fit((X - mean) / scale, y)
    return mean, scale, lr.coef_[0], float(lr.intercept_[0])


def predict(model, X):
    import numpy as np

    mean, scale, coef, b = model
    z = b + ((np.asarray(X, float) - mean) / scale) @ coef
    return 1 / (1 + np.exp(-np.clip(z, -60, 60)))


def choose_threshold(p, y, precision: float) -> float:
    """The lowest P at which the parts with P >= it reach ``precision`` (1.0: none does, nothing is confident)."""
    import numpy as np

    p, y = np.asarray(p), np.asarray(y)
    best = 1.0
    for t in sorted(set(np.round(p, 4)), reverse=True):
        sel = p >= t
        if sel.sum() and y[sel].mean() >= precision:
            best = float(t)
    return best


def calibrate(reports: dict[str, dict], cases, precision: float) -> dict:
    """Leave-one-case-out P(part damaged) and decisions (module doc), and the model fitted on every case."""
    from carcheck.evaluate.cases import load_expectations, reliability, score_case, sum_scores
    from carcheck.pipeline.confidence import FEATURES

    samples = labelled_samples(reports, cases)
    X = [[s[2][f] for f in FEATURES] for s in samples]
    y = [s[3] for s in samples]
    case_of = [s[0] for s in samples]
    p_cv, per_case, thresholds = [None] * len(samples), {}, {}
    for case, _, exp_path in cases:
        train = [i for i, c in enumerate(case_of) if c != case]
        model = fit_lr([X[i] for i in train], [y[i] for i in train], FEATURES)
        thr = choose_threshold(predict(model, [X[i] for i in train]), [y[i] for i in train], precision)
        thresholds[case] = thr
        parts = reports[case].get("parts") or []
        p_case = predict(model, [[f["features"][k] for k in FEATURES] for f in parts]) if parts else []
        for i, c in enumerate(case_of):
            if c == case:
                j = next(k for k, f in enumerate(parts) if f["part"] == samples[i][1])
                p_cv[i] = float(p_case[j])
        confident = {f["part"] for f, p in zip(parts, p_case) if p >= thr}
        per_case[case] = score_case(reports[case], load_expectations(exp_path), confident=confident)
    dev = [s for c, s in per_case.items() if c != DEMO.name and c not in EXTRA]
    extra = [s for c, s in per_case.items() if c in EXTRA]
    full = fit_lr(X, y, FEATURES)
    thr_full = choose_threshold(predict(full, X), y, precision)
    rel = reliability(p_cv, y)
    c_ref = [min(1.0, s[2]["c_base"] * s[2]["k_agree"]) for s in samples]  # C_refined read as a probability
    sel = [i for i, p in enumerate(p_cv) if p >= thresholds[case_of[i]]]
    return {"per_case": per_case, "dev": sum_scores(dev), "extra": sum_scores(extra) if extra else None,
            "all": sum_scores(list(per_case.values())), "demo": per_case.get(DEMO.name), "samples": len(y), "positives": int(sum(y)),
            "reliability": rel, "reliability_c_refined": reliability(c_ref, y), "thresholds": thresholds,
            "cv_precision_of_labelled": round(sum(y[i] for i in sel) / len(sel), 4) if sel else None,
            "model": {"features": list(FEATURES), "mean": [round(float(v), 6) for v in full[0]],
                      "scale": [round(float(v), 6) for v in full[1]], "coef": [round(float(v), 6) for v in full[2]],
                      "intercept": round(full[3], 6), "threshold": round(thr_full, 4), "target_precision": precision}}


def fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def print_tables(results: dict, cases) -> None:
    names = list(results)
    print(f"\nPer case ({names[-1]}; groups confident/any/of, confident parts outside groups, clean parts reported "
          f"confident/any of clean, non-exterior searched of, odd flagged of, false flags):")
    print(f"{'case':<44}{'groups c/a/n':>14}{'wrong':>7}{'clean c/a/n':>14}{'non-ext':>9}{'odd':>6}{'false':>7}")
    for case, _, _ in cases:
        s = results[names[-1]]["per_case"][case]
        print(f"{case[:43]:<44}{s['groups_confident']:>4}/{s['groups_any']}/{s['groups']:<6}{s['confident_outside_groups']:>5}"
              f"{s['clean_reported_confident']:>6}/{s['clean_reported_any']}/{s['clean_parts']:<5}"
              f"{s['non_exterior_searched']:>5}/{s['non_exterior_photos']:<3}{s['odd_flagged']:>3}/{s['odd_photos']:<2}"
              f"{s['false_flags']:>5}")
    print("\nSummed over the dev cases (the demo case separately), each model set in this run:")
    rows = [("damaged groups found with confidence", "recall_confident", ">= 0.60"),
            ("damaged groups found at all", "recall_any", ">= 0.85"),
            ("confident parts inside a damaged group", "confident_in_groups", ">= 0.90"),
            ("clean parts reported damaged, confident", "clean_confident_rate", "<= 0.02"),
            ("clean parts reported damaged, any", "clean_any_rate", ""),
            ("undamaged cases with a confident part", "undamaged_cases_with_confident", "<= 1 in 10"),
            ("non-exterior photos searched for damage", "non_exterior_searched_rate", ""),
            ("odd-vehicle photos flagged", "odd_flagged", ""),
            ("photos of the case's car flagged", "false_flags", "")]
    for part in ("dev", "extra"):
        if results[names[0]].get(part) is None:
            continue
        if part == "extra":
            print(f"\nSummed over the extra damaged cases (bench/cases_extra, {len(EXTRA)} cases), each model set:")
        print(f"{'':<44}" + "".join(f"{n:>16}" for n in names) + f"{'target':>12}")
        for label, key, target in rows:
            print(f"{label:<44}" + "".join(f"{fmt(results[n][part][key]):>16}" for n in names) + f"{target:>12}")
        d0 = results[names[0]][part]
        print(f"  ({d0['groups']} damaged groups, {d0['confident_parts']} confident parts with {names[0]}, "
              f"{d0['clean_parts']} clean parts, {d0['undamaged_cases']} undamaged cases, {d0['non_exterior_photos']} "
              f"non-exterior photos, {d0['odd_photos']} odd photos)")
    for n in names:
        demo = results[n]["demo"]
        if demo:
            print(f"demo Panamera, {n}: rear groups confident {demo['groups_confident']}/{demo['groups']}, any "
                  f"{demo['groups_any']}/{demo['groups']}; confident clean parts {demo['clean_confident'] or '-'}; "
                  f"missed {demo['missed_groups'] or '-'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=DAMAGE.safetensors",
                    help="Another damage model to run beside the shipped one (repeatable).")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="An AssessConfig override for every model set (JSON value), e.g. longest_side=768.")
    ap.add_argument("--only", default="", help="Comma-separated substrings: only cases whose name holds one.")
    ap.add_argument("--quick", action="store_true", help="8 cases (a smoke run, not a result).")
    ap.add_argument("--no-cache", action="store_true", help="Re-assess cached cases.")
    ap.add_argument("--calibrate", action="store_true", help="Fit P(part damaged) with leave-one-case-out "
                    "cross-validation for the last model set and score its decisions (module doc).")
    ap.add_argument("--precision", type=float, default=0.9, help="Precision the review threshold is chosen for.")
    ap.add_argument("--model-out", type=Path, default=RUNS / "calibration" / "part_confidence.json",
                    help="Where --calibrate writes the model fitted on every case (a new file, never the shipped one).")
    ap.add_argument("--out", type=Path, default=RESULTS / "cases.json")
    args = ap.parse_args()
    cases, missing = case_list()
    if not cases:
        raise SystemExit(f"no case folders: build the dev cases into {DEV_BUILT} (see {DATA / 'cases_dev' / 'README.md'})")
    if args.quick:
        cases = cases[:4] + cases[-4:]
    if args.only:
        cases = [c for c in cases if any(k in c[0] for k in args.only.split(","))]
    overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(2)
    from carcheck.models.inference import DEFAULT_SEGMENTERS
    from carcheck.pipeline.runner import file_sha256 as sha256
    from carcheck.models.runtime import cpu_info

    sets = {"shipped": [Path(p) for p in DEFAULT_SEGMENTERS]}
    for c in args.candidate:
        name, _, path = c.partition("=")
        if not path or not Path(path).is_file():
            raise SystemExit(f"--candidate {c!r}: expected NAME=FILE with an existing file")
        sets[name] = [Path(DEFAULT_SEGMENTERS[0]), Path(path)]
    t0 = time.time()
    print(f"{len(cases)} cases ({sum(len(p) for _, p, _ in cases)} photos); not built: {len(missing)}")
    results = {}
    for name, weights in sets.items():
        reports = run_set(name, weights, cases, not args.no_cache, config=overrides)
        results[name] = score_set(reports, cases)
        results[name]["weights"] = {str(w.relative_to(ROOT) if w.is_relative_to(ROOT) else w): sha256(w) for w in weights}
    if args.calibrate:  # every model set, from its cached reports; the last set's model is written out
        for name in list(sets):
            reports = run_set(name, sets[name], cases, True, log=lambda *a: None, config=overrides)
            cal = calibrate(reports, cases, args.precision)
            results[f"{name}+cv"] = cal
        m = cal["model"]
        m["source"] = (f"logistic regression on {cal['samples']} judged per-part findings ({cal['positives']} damaged) of "
                       f"{len(cases)} cases (bench/cases.py --calibrate, model set {name!r}); threshold for precision "
                       f"{args.precision} on those findings; leave-one-case-out ECE {cal['reliability']['ece']}")
        m["metrics"] = {"cv_ece": cal["reliability"]["ece"], "cv_recall_confident": cal["dev"]["recall_confident"],
                        "cv_confident_in_groups": cal["dev"]["confident_in_groups"],
                        "cv_clean_confident_rate": cal["dev"]["clean_confident_rate"],
                        "samples": cal["samples"], "positives": cal["positives"]}
        args.model_out.parent.mkdir(parents=True, exist_ok=True)
        args.model_out.write_text(json.dumps(m, indent=1) + "\n")
    print_tables(results, cases)
    for name in [n for n in results if n.endswith("+cv")]:
        cal = results[name]
        rel = cal["reliability"]
        print(f"\nReliability of P(part damaged), {name}, leave-one-case-out ({rel['n']} judged parts, {cal['positives']} "
              f"damaged): ECE {fmt(rel['ece'])} (target <= {TARGETS['ece']}); C_refined read as a probability: ECE "
              f"{fmt(cal['reliability_c_refined']['ece'])}; threshold for precision {args.precision} (all cases): "
              f"{cal['model']['threshold']}")
        print(f"{'P bin':<12}{'parts':>7}{'mean P':>9}{'damaged':>9}")
        for b in rel["bins"]:
            if b["n"]:
                print(f"{b['lo']:.1f}-{b['hi']:.1f}{b['n']:>11}{b['mean_p']:>9.3f}{b['frac_positive']:>9.3f}")
    if args.calibrate:
        print(f"model fitted on every case ({list(sets)[-1]}) -> {args.model_out}")
    res = {"wall_s": round(time.time() - t0, 1), "config_overrides": overrides, "cases": len(cases),
           "cases_not_built": missing, "targets": TARGETS, "results": results}
    if not (args.quick or args.only):
        write_results(args.out, res, indent=1)
        print(f"-> {args.out} ({res['wall_s']} s, {cpu_info().get('cpu_model')})")


if __name__ == "__main__":
    main()
