"""Study (issue 26): which uncertain photos the damage search may skip. The photo-type rule
(:mod:`carcheck.pipeline.photo_type`) searches an *uncertain* photo for exterior damage when its exterior
probability reaches ``PhotoTypeConfig.search_if_exterior_at_least`` (shipped 0: every uncertain photo).
This prints, for several thresholds, (a) the share of held-out exterior **damage** photos still searched
(CarDD valid and test, lensor test, lplenka val, VDS test: every one is an exterior photo, none trained
either photo-type head) and (b) on the real dev cases (``data/cases_dev``, their expectations say which photos
are not exterior views) the non-exterior photos searched and the exterior photos lost.

"Searched" is the rule's ``search_exterior_damage``; in the assessment a photo typed "no vehicle" still meets
the presence gate (bench/studies/photo_type_rescue_effect.py measures the assessment).

Rule fixed before looking: the threshold is the highest one that keeps >= 99% of every held-out damage
set searched (the dev cases only report its effect; they do not choose it).

Second opinion (issue 26): with ``--damage-aware FILE`` (default: the shipped
``classifier_photo_type_damage_aware_lite0``, trained with damaged cars from the *training* splits of the
same four sets) the study also prints the shipped gate (threshold 0) plus "searched anyway when the
damage-aware head's P(exterior) >= r" for several r, the rule :mod:`carcheck.pipeline.photo_type` applies.

Run: python bench/studies/photo_type_gate.py [--head FILE] [--out JSON]   (features at 512 px, cached
under runs/feature_cache); writes bench/results/photo_type_gate.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402

import torch

from carcheck.data.recipes import build_recipe
from carcheck.models.classifier import WEIGHTS_DIR, load_head
from carcheck.models.features import FeatureCache
from carcheck.pipeline.photo_type import decide_photo_type, probabilities_from_logits
from carcheck.schema import PhotoTypeConfig

THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
SUFFIXES = {".jpg", ".jpeg", ".png"}


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--head", type=Path, default=WEIGHTS_DIR / "classifier_photo_type_lite0.safetensors")
    ap.add_argument("--damage-aware", type=Path,
                    default=WEIGHTS_DIR / "classifier_photo_type_damage_aware_lite0.safetensors")
    ap.add_argument("--out", type=Path, default=RESULTS / "photo_type_gate.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    head, info = load_head(args.head)
    cache = FeatureCache(ROOT / "runs" / "feature_cache")

    aware = load_head(args.damage_aware) if args.damage_aware and args.damage_aware.is_file() else None

    def probs(paths: list[Path]) -> list[tuple[dict[str, float], float | None]]:
        """(first head's probabilities, the damage-aware head's P(exterior) or None) per photo."""
        feats, ok, _ = cache.get_many(paths, ("full",))
        with torch.no_grad():
            logits = head.head(feats[:, 0])
            second = aware[0].head(feats[:, 0]) if aware else None
        out = []
        for i, lg in enumerate(logits):
            pa = None
            if second is not None:
                q = probabilities_from_logits(second[i].tolist(), aware[1].classes)
                pa = min(1.0, q["exterior_full"] + q["exterior_closeup"])
            out.append((probabilities_from_logits(lg.tolist(), info.classes), pa))
        return out

    damage_sets = {
        "cardd_valid": images(ROOT / "data" / "cardd" / "valid" / "images"),
        "cardd_test": images(ROOT / "data" / "cardd" / "test" / "images"),
        "lensor_test": images(DATA / "car_damage" / "lensor_severity" / "images" / "test"),
        "lplenka_val": images(DATA / "car_damage" / "coco_car_damage_lplenka" / "val"),
        "vds_test": [r.path for r in build_recipe("severity", DATA) if r.split == "test"],
    }
    dev_ext, dev_non = [], []
    for exp in sorted((DATA / "cases_dev" / "expectations").glob("*.json")):
        non = set(json.loads(exp.read_text()).get("not_exterior_photos", {}))
        for p in images(ROOT / "data" / "cases_dev" / exp.stem):
            (dev_non if p.name in non else dev_ext).append(p)
    sets = {k: v for k, v in damage_sets.items() if v}
    got = {k: probs(v) for k, v in sets.items()}
    dev = {"exterior": probs(dev_ext) if dev_ext else [], "not_exterior": probs(dev_non) if dev_non else []}

    def searched(ps, t: float, second: float | None = None) -> int:
        cfg = PhotoTypeConfig(search_if_exterior_at_least=t, search_if_damage_aware_exterior_at_least=second)
        return sum(decide_photo_type(p, cfg, damage_aware_exterior=pa).search_exterior_damage for p, pa in ps)

    def row(t: float, second: float | None) -> dict:
        r = {"threshold": t, "damage_aware_at_least": second}
        for k, ps in got.items():
            r[k] = round(searched(ps, t, second) / len(ps), 4)
        r["dev_exterior_lost"] = len(dev["exterior"]) - searched(dev["exterior"], t, second)
        r["dev_not_exterior_searched"] = searched(dev["not_exterior"], t, second)
        return r

    rows = [row(t, None) for t in THRESHOLDS]
    ok = [r["threshold"] for r in rows if all(r[k] >= 0.99 for k in got)]
    chosen = max(ok) if ok else 0.0
    second_rows = [row(t, s) for s in (0.8, 0.9, 0.95) for t in THRESHOLDS] if aware else []
    cols = ["threshold", "damage_aware_at_least", *got, "dev_exterior_lost", "dev_not_exterior_searched"]
    print("share of held-out exterior damage photos searched; dev cases: exterior photos lost, non-exterior searched")
    print("  ".join(f"{c:>22}" for c in cols))
    for r in rows + second_rows:
        print("  ".join(f"{str(r[c]):>22}" for c in cols))
    print(f"chosen (highest keeping >= 0.99 of every damage set, first head alone): {chosen}")
    res = {"what": "photo-type gate threshold study (bench/studies/photo_type_gate.py)", "head": args.head.name,
           "n": {**{k: len(v) for k, v in sets.items()}, "dev_exterior": len(dev_ext), "dev_not_exterior": len(dev_non)},
           "damage_aware_head": args.damage_aware.name if aware else None, "second_opinion_rows": second_rows,
           "rows": rows, "rule": ">= 0.99 of every held-out damage set searched", "chosen": chosen,
           "seconds": round(time.time() - t0, 1)}
    write_results(args.out, res, indent=1)


if __name__ == "__main__":
    main()
