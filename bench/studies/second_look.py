"""Issue 26: the damage filter's second look (``FusionConfig.missed_damage_filter_at_least``) on real claim photos.

Where the damage map's argmax finds nothing but the damaged / undamaged image classifier is sure the photo shows
damage, the map is read again at P(any damage) >= ``missed_damage_min_probability``. This measures what that does on
the "Fast, Furious & Insured" claim photos (``data/ffi``, real web photos of claims; nothing was chosen on them):
how many damaged claims (Condition 1 with an amount) get any finding, and how many undamaged ones (Condition 0) do,
with the rule off (as shipped) and on at the given settings. Each photo is one case. Photos that already get a
finding with the rule off cannot change (the rule acts only on photos without any region), so only the others
are assessed again with the rule on. The rule-off result of a photo is read from the claims benchmark's cached
report (``data/ffi_reports/<stem>.json``, ``python bench/accuracy/claims.py --stage ffi-assess``) when it was made by
the installed model files, else the photo is assessed.

Run: python bench/studies/second_look.py [--at-least 0.9] [--min-probability 0.3]
Writes bench/results/second_look_ffi.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import RESULTS, ROOT, clock, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ffi", type=Path, default=ROOT / "data" / "ffi" / "dataset")
    ap.add_argument("--at-least", type=float, default=0.9)
    ap.add_argument("--min-probability", type=float, default=0.3)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "second_look_ffi.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from carcheck.models.runtime import cpu_info
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig, FusionConfig

    rows = [r for r in csv.DictReader(open(args.ffi / "train.csv", encoding="utf-8"))
            if r["Condition"] == "0" or (r["Condition"] == "1" and r["Amount"] and float(r["Amount"]) > 0)]
    rows = rows[: args.limit] if args.limit else rows
    off = Assessor(AssessConfig(gradcam=False, threads=2))
    on = Assessor(AssessConfig(gradcam=False, threads=2, fusion=FusionConfig(
        missed_damage_filter_at_least=args.at_least, missed_damage_min_probability=args.min_probability)))
    counts = {k: {"photos": 0, "finding_off": 0, "finding_on": 0} for k in ("damaged", "undamaged")}
    current = sorted((m.file, m.sha256) for m in off.model_files)
    c_cached = {"used": 0}
    changed, seconds = [], 0.0
    for i, r in enumerate(rows):
        kind = "damaged" if r["Condition"] == "1" else "undamaged"
        photo = args.ffi / "trainImages" / r["Image_path"]
        cached = ROOT / "data" / "ffi_reports" / f"{photo.stem}.json"
        rep = json.loads(cached.read_text()) if cached.is_file() else None
        if rep is not None and sorted((m["file"], m["sha256"]) for m in rep["model_files"]) == current:
            has = bool(rep["findings"])
            c_cached["used"] += 1
        else:
            (rep, _), s = clock(off.assess, [photo], case_id=photo.stem)
            seconds += s
            has = bool(rep.findings)
        c = counts[kind]
        c["photos"] += 1
        if has:
            c["finding_off"] += 1
            c["finding_on"] += 1
            continue
        (rep2, _), s = clock(on.assess, [photo], case_id=photo.stem)
        seconds += s
        if rep2.findings:
            c["finding_on"] += 1
            changed.append({"photo": r["Image_path"], "kind": kind,
                            "parts": sorted({f.part for f in rep2.findings}),
                            "damages": sorted({f.damage for f in rep2.findings}),
                            "any_confident": any(not f.needs_review for f in rep2.findings)})
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{len(rows)}", flush=True)
    for k, c in counts.items():
        c["no_finding_off"] = round(1 - c["finding_off"] / max(1, c["photos"]), 4)
        c["no_finding_on"] = round(1 - c["finding_on"] / max(1, c["photos"]), 4)
    print(f"{'FFI photos':12} {'n':>5} {'with a finding: off':>20} {'on':>6} {'no finding: off':>16} {'on':>6}")
    for k, c in counts.items():
        print(f"{k:12} {c['photos']:>5} {c['finding_off']:>20} {c['finding_on']:>6} {c['no_finding_off']:>16} "
              f"{c['no_finding_on']:>6}")
    print(f"confident findings added by the rule: {sum(x['any_confident'] for x in changed)}")
    write_results(args.out, {"machine": cpu_info(), "at_least": args.at_least,
                             "min_probability": args.min_probability, "counts": counts,
                             "rule_off_from_cached_reports": c_cached["used"],
                             "target_damaged_no_finding": 0.10, "changed": changed,
                             "seconds_assessing": round(seconds, 1)}, command=" ".join(["python", *sys.argv]))
    print("written", args.out)


if __name__ == "__main__":
    main()
