"""Study (issue 26): what the damage-aware photo-type head's second opinion finds. Photos that the first
photo-type head alone leaves out of the damage search are assessed one photo per case, with the second opinion
(shipped config) and without it (``search_if_damage_aware_exterior_at_least=None``). Sets:

- ``cardd_valid``: CarDD validation photos (every one a damage photo; its labels give the damage types);
- ``ffi_damaged`` / ``ffi_undamaged``: the "Fast, Furious & Insured" claim photos (``data/ffi``, see
  bench/accuracy/claims.py for the fetch) with condition 1 / 0: real claim photos, damaged or not.

Printed per set: photos left out by the first head, and of those, photos searched, photos with a damage
finding, and (CarDD) photos whose findings include one of the photo's labelled types. A photo the first head
types "no vehicle" still meets the presence gate, so "left out" photos can have findings without the second
opinion.

Run: python bench/studies/photo_type_rescue_effect.py [--sets cardd_valid,ffi_damaged,ffi_undamaged]
(features cached under runs/feature_cache; writes bench/results/photo_type_rescue_effect.json)
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import RESULTS, ROOT, write_results  # noqa: E402

import torch

from carcheck.models.classifier import WEIGHTS_DIR, load_head
from carcheck.models.features import FeatureCache
from carcheck.pipeline.photo_type import decide_photo_type, probabilities_from_logits

CARDD = ROOT / "data" / "cardd" / "valid"
FFI = ROOT / "data" / "ffi" / "dataset"
#: CarDD's Roboflow class order (data/cardd/data.yaml) -> carcheck's damage names
NAMES = ["crack", "dent", "glass_shatter", "lamp_broken", "scratch", "tire_flat"]


def photo_sets() -> dict[str, list[tuple[Path, set[str] | None]]]:
    """set name -> [(photo, labelled CarDD types or None)]; sets whose data is not built are absent."""
    out = {}
    photos = sorted((CARDD / "images").glob("*.jpg"))
    if photos:
        out["cardd_valid"] = [(p, {NAMES[int(line.split()[0])] for line in
                                   (CARDD / "labels" / f"{p.stem}.txt").read_text().splitlines() if line.strip()})
                              for p in photos]
    if (FFI / "train.csv").is_file():
        rows = list(csv.DictReader((FFI / "train.csv").open(encoding="utf-8")))
        for name, cond in (("ffi_damaged", "1"), ("ffi_undamaged", "0")):
            out[name] = [(FFI / "trainImages" / r["Image_path"], None) for r in rows
                         if r["Condition"] == cond and (FFI / "trainImages" / r["Image_path"]).is_file()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="cardd_valid,ffi_damaged,ffi_undamaged")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    sets = {k: v for k, v in photo_sets().items() if k in args.sets.split(",")}
    if not sets:
        raise SystemExit("no set built: CarDD valid (data/cardd) or FFI (data/ffi, bench/accuracy/claims.py)")
    head, info = load_head(WEIGHTS_DIR / "classifier_photo_type_lite0.safetensors")
    cache = FeatureCache(ROOT / "runs" / "feature_cache")
    left_out = {}
    for name, items in sets.items():
        feats, ok, _ = cache.get_many([p for p, _ in items], ("full",))
        with torch.no_grad():
            logits = head.head(feats[:, 0])
        left_out[name] = [items[i] for i, lg in zip(ok, logits) if not decide_photo_type(
            probabilities_from_logits(lg.tolist(), info.classes)).search_exterior_damage]

    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig, PhotoTypeConfig

    res = {name: {"photos": len(sets[name]), "left_out_by_first_head": len(left_out[name])} for name in sets}
    for rule, second in (("first_head_only", None), ("with_damage_aware_head", 0.9)):
        a = Assessor(AssessConfig(threads=2, gradcam=False,
                                  photo_type=PhotoTypeConfig(search_if_damage_aware_exterior_at_least=second)))
        for name, items in left_out.items():
            searched = found = right = 0
            for p, want in items:
                report, _ = a.assess([p], case_id=p.stem)
                ph = report.photos[0]
                got = {d.damage for d in ph.detections}
                searched += bool(ph.photo_type and ph.photo_type.search_exterior_damage)
                found += bool(got)
                right += bool(want and got & want)
            res[name][rule] = {"searched": searched, "with_a_damage_finding": found,
                               "with_a_labelled_type_found": right if name == "cardd_valid" else None}
    print(f"{'set':<15}{'photos':>8}{'left out':>10}  {'rule':<24}{'searched':>9}{'with a finding':>16}{'labelled type':>15}")
    for name, r in res.items():
        for rule in ("first_head_only", "with_damage_aware_head"):
            v = r[rule]
            print(f"{name:<15}{r['photos']:>8}{r['left_out_by_first_head']:>10}  {rule:<24}{v['searched']:>9}"
                  f"{v['with_a_damage_finding']:>16}{str(v['with_a_labelled_type_found']):>15}")
    write_results(RESULTS / "photo_type_rescue_effect.json",
                  {"what": __doc__.split("\n")[0], "results": res,
                   "left_out_photos": {k: [p.name for p, _ in v] for k, v in left_out.items()},
                   "seconds": round(time.time() - t0, 1)}, indent=1)


if __name__ == "__main__":
    main()
