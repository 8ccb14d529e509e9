"""Same vehicle on phone photos (issue 30 item 3): which evidence tells the photos of one car from
another car's, calibrated on listing pairs of the real dev cases with cross-validation over cases.

Evidence per photo, all from outputs the assessment already has (no extra pass):
- the re-id embedding of the shipped verification model (cosine distance of a pair);
- the make/model head's probabilities (Bhattacharyya coefficient of two photos' model and make
  distributions: 1 = the same belief, 0 = disjoint);
- the body colour: median CIE L*a*b* of the pixels the part map calls body panels (doors, bumpers,
  hood, boot, mirrors: no glass, lamps or wheels), compared as |dL*| and the a*b* distance;
- whether either photo is a close-up (the re-id model was trained on whole vehicles).
Only photos typed exterior (full or close-up) by the photo-type head are compared: interior,
odometer, VIN and document photos are never "a different vehicle" by appearance.

Pairs: two exterior photos of one case's main car = same (label 1); photos of two different cases,
and a mixed case's odd photo against its main car's = different (0). Cases are split into 5 folds
(seeded by case name); a logistic regression (scikit-learn, standardised features) fitted on the
pairs whose two cases are outside a fold scores the pairs inside it. The per-photo decision (what the
report flags): a photo's median P(same) against the case's other exterior photos below a threshold;
the threshold is chosen on the training folds' cases as the highest that keeps false flags at or
below 1 per 100 same-car photos, and scored on the held-out fold's cases. Reported: pair AUROC of
each evidence alone and combined (out of fold), odd photos flagged, false flags per 100 same-car
photos, for the shipped rule (embedding distance to the medoid, EER threshold of surveillance
crops, every photo compared) beside the new one.

Run: python bench/calibration/same_vehicle.py [--cases data/cases_dev] [--write runs/calibration/same_vehicle.json]
(features cached in runs/same_vehicle/features.pt per model SHA; about 4 minutes on 2 cores the first time).
Writes bench/results/same_vehicle.json, and with --write the calibration (coefficients, threshold) fitted on all cases.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, ROOT, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from carcheck.data.images import is_image_path  # noqa: E402
from carcheck.pipeline.same_vehicle import (FEATURES, PhotoIdentity, SameVehicleModel, pair_features,  # noqa: E402
                                           photo_identity)

console = Console(markup=False)
FOLDS = 5
MAX_FALSE_FLAGS = 0.01  # per same-car photo


def fit_same_vehicle(X: np.ndarray, y: np.ndarray) -> SameVehicleModel:
    """Logistic regression (scikit-learn, L2, C=1, balanced class weights) on standardised pair
    features ``(N, F)``; missing values (NaN) take the training mean."""
    from sklearn.linear_model import LogisticRegression

    fill = np.nanmean(X, axis=0)
    Xf = np.where(np.isnan(X), fill, X)
    mean, scale = Xf.mean(0), Xf.std(0) + 1e-9
    lr = LogisticRegression(class_weight="balanced", max_iter=1000).fit((Xf - mean) / scale, y)
    return SameVehicleModel(mean.tolist(), scale.tolist(), fill.tolist(), lr.coef_[0].tolist(), float(lr.intercept_[0]),
                            source={"fitted_on_pairs": int(len(y)), "same_pairs": int(y.sum())})


def _cases(folder: Path, expectations: Path) -> list[tuple[str, list[Path], dict]]:
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        e = expectations / f"{d.name}.json"
        if e.is_file():
            out.append((d.name, sorted(p for p in d.iterdir() if is_image_path(p)), json.loads(e.read_text())))
    return out


def collect(cases, cache: Path) -> dict[str, dict[str, PhotoIdentity]]:
    """Per case, per photo file name: the :class:`PhotoIdentity` of every assessed photo (cached)."""
    from carcheck.pipeline.assess import Assessor

    a = Assessor()
    # the model files' SHA-256 (not their names: a new make/model head ships under the old name); not the
    # calibration's own file, which this script refits
    shas = sorted((m.role, m.sha256) for m in a.model_files if m.role != "same_vehicle")
    key = hashlib.sha256(json.dumps(shas).encode()).hexdigest()[:12]
    f = cache / f"features-{key}.pt"
    if f.is_file():
        return torch.load(f, weights_only=False)
    out = {}
    for name, files, _ in cases:
        rep, vis = a.assess(files, case_id=name)
        part_names = a.part_names
        out[name] = {}
        for p in rep.photos:
            v = vis.get(p.path)
            if v is None or v.heads is None:
                continue
            out[name][Path(p.path).name] = photo_identity(p, v.image, v.part_label, part_names, v.heads.embedding,
                                                           v.heads.logits.get("make_model"),
                                                           a.heads.info("make_model").classes)
        console.print(f"{name}: {len(out[name])} photos")
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(out, f)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=Path, default=ROOT / "data" / "cases_dev")
    ap.add_argument("--expectations", type=Path, default=DATA / "cases_dev" / "expectations")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "same_vehicle")
    ap.add_argument("--write", type=Path, default=None, help="write the calibration fitted on all cases here")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cases = _cases(a.cases, a.expectations)
    if not cases:
        raise SystemExit(f"no cases with expectations in {a.cases} (build them: ../shared/data/cases_dev/README.md)")
    feats = collect(cases, a.cache)
    from carcheck.models.classifier import SHIPPED_CLASSIFIERS, load_head

    ver, ver_info = load_head(SHIPPED_CLASSIFIERS["verification"])
    exp = {n: e for n, _, e in cases}

    def main_car(case: str) -> dict[str, PhotoIdentity]:
        odd = set(exp[case].get("other_vehicle_photos", []))
        return {k: v for k, v in feats[case].items() if v.exterior and k not in odd}

    fold = {c: zlib.crc32(c.encode()) % FOLDS for c in feats}
    # pairs: (case_a, photo_a, case_b, photo_b, label)
    pairs = []
    names = sorted(feats)
    for ci, c in enumerate(names):
        m = sorted(main_car(c))
        odd = [k for k in exp[c].get("other_vehicle_photos", []) if k in feats[c] and feats[c][k].exterior]
        pairs += [(c, m[i], c, m[j], 1) for i in range(len(m)) for j in range(i + 1, len(m))]
        pairs += [(c, o, c, k, 0) for o in odd for k in m]
        for d in names[ci + 1:]:
            pairs += [(c, x, d, y, 0) for x in m for y in sorted(main_car(d))]
    X = np.array([pair_features(feats[c][x], feats[d][y], ver.distance) for c, x, d, y, _ in pairs])
    y = np.array([p[4] for p in pairs])
    console.print(f"{len(pairs)} exterior pairs ({int(y.sum())} same car) over {len(names)} cases")

    oof = np.full(len(pairs), np.nan)
    models = {}
    for k in range(FOLDS):
        tr = np.array([fold[c] != k and fold[d] != k for c, _, d, _, _ in pairs])
        te = np.array([fold[c] == k and fold[d] == k for c, _, d, _, _ in pairs])
        models[k] = fit_same_vehicle(X[tr], y[tr])
        oof[te] = models[k].p_same(X[te])
    ok = ~np.isnan(oof)
    auroc = {"combined (out of fold, pairs within one fold)": float(roc_auc_score(y[ok], oof[ok]))}
    for i, f in enumerate(FEATURES):
        s = X[:, i] if f.startswith("bc_") else -X[:, i]
        auroc[f] = float(roc_auc_score(y, s))
    hard = np.array([c == d for c, _, d, _, _ in pairs])  # within-case pairs: the mixed cases' odd photo vs main
    if (y[hard] == 0).any():
        auroc["within cases only (odd photo vs main car)"] = float(roc_auc_score(y[hard & ok], oof[hard & ok]))

    # per-photo decisions, out of fold
    def photo_scores(model: SameVehicleModel, case: str) -> dict[str, float]:
        ext = {k: v for k, v in feats[case].items() if v.exterior}
        return model.photo_scores(ext, ver.distance)

    def decide(model: SameVehicleModel, case: str, thr: float) -> set[str]:
        return {k for k, s in photo_scores(model, case).items() if s < thr}

    def choose_threshold(model: SameVehicleModel, train_cases: list[str]) -> float:
        same_scores, n_same = [], 0
        for c in train_cases:
            odd = set(exp[c].get("other_vehicle_photos", []))
            s = photo_scores(model, c)
            same_scores += [v for k, v in s.items() if k not in odd]
        same_scores.sort()
        n_same = len(same_scores)
        allowed = int(MAX_FALSE_FLAGS * n_same)
        return float(same_scores[allowed]) if n_same > allowed else 0.5  # flags < thr: at most `allowed` same-car photos

    flagged_odd, n_odd, false_flags, n_same_photos, thresholds = 0, 0, 0, 0, {}
    per_case = {}
    for k in range(FOLDS):
        thr = choose_threshold(models[k], [c for c in names if fold[c] != k])
        thresholds[k] = thr
        for c in [c for c in names if fold[c] == k]:
            odd = set(exp[c].get("other_vehicle_photos", []))
            flags = decide(models[k], c, thr)
            ext = {kk for kk, v in feats[c].items() if v.exterior}
            n_odd += len(odd & set(feats[c]))
            flagged_odd += len(flags & odd)
            n_same_photos += len(set(feats[c]) - odd)
            false_flags += len(flags - odd)
            if odd or flags - odd:
                per_case[c] = {"odd": sorted(odd), "flagged": sorted(flags), "exterior": len(ext)}
    # the shipped rule, from the case bench's own reports' vehicle_match (every photo compared)
    shipped = {"odd_flagged": 0, "odd": 0, "false_flags": 0, "same_photos": 0}
    for c in names:
        odd = set(exp[c].get("other_vehicle_photos", []))
        flags = {k for k, v in feats[c].items() if v.shipped_flag}
        shipped["odd"] += len(odd & set(feats[c]))
        shipped["odd_flagged"] += len(flags & odd)
        shipped["same_photos"] += len(set(feats[c]) - odd)
        shipped["false_flags"] += len(flags - odd)
    new = {"odd_flagged": flagged_odd, "odd": n_odd, "false_flags": false_flags, "same_photos": n_same_photos,
           "thresholds_by_fold": thresholds}

    t = Table("evidence", "pair AUROC", title="same car vs another car, exterior photo pairs of the dev cases")
    for kk, v in auroc.items():
        t.add_row(kk, f"{v:.3f}")
    console.print(t)
    t2 = Table("rule", "odd photos flagged", "false flags / 100 same-car photos", title="per-photo decisions")
    t2.add_row("shipped (embedding to medoid, every photo)", f"{shipped['odd_flagged']} / {shipped['odd']}",
               f"{100 * shipped['false_flags'] / max(1, shipped['same_photos']):.1f} ({shipped['false_flags']})")
    t2.add_row("evidence model, exterior only (out of fold)", f"{new['odd_flagged']} / {new['odd']}",
               f"{100 * new['false_flags'] / max(1, new['same_photos']):.1f} ({new['false_flags']})")
    t2.add_row("target", "all", "<= 1")
    console.print(t2)
    for c, v in per_case.items():
        console.print(f"  {c}: odd {v['odd']} flagged {v['flagged']} ({v['exterior']} exterior)")
    res = {"pairs": len(pairs), "same_pairs": int(y.sum()), "cases": len(names), "folds": FOLDS,
           "auroc": auroc, "shipped": shipped, "evidence_model": new, "per_case": per_case,
           "targets": {"auroc": 0.95, "odd_flagged": "all", "false_flags_per_100": 1.0}}
    if a.write:
        from carcheck.pipeline.runner import file_sha256

        full = fit_same_vehicle(X, y)
        full.threshold = choose_threshold(full, names)
        full.source.update(cases=len(names), rule=f"threshold keeps <= {MAX_FALSE_FLAGS:.0%} of the cases' same-car "
                           "photos below it", command="python bench/calibration/same_vehicle.py --write ...",
                           heads={t: file_sha256(SHIPPED_CLASSIFIERS[t]) for t in ("make_model", "verification")})
        a.write.parent.mkdir(parents=True, exist_ok=True)
        a.write.write_text(json.dumps(full.to_dict(), indent=1) + "\n", encoding="utf-8")
        res["written"] = {"path": str(a.write), **full.to_dict()}
        console.print(f"calibration fitted on all {len(names)} cases -> {a.write} (threshold {full.threshold:.3f})")
    console.print(f"wrote {write_results('same_vehicle.json', res, indent=1, default=str)}")


if __name__ == "__main__":
    main()
