"""Real-case benchmark (issue 16, item 6): what a claims handler reads from the report of real cases.

1. The real 12-photo case ``cases/salvage_panamera_167111`` (one Porsche Panamera; PROVENANCE.md: front
   undamaged, rear destroyed, 01 a registration document, 07/08/11 interior and luggage compartment,
   09 a VIN plate close-up). Printed against the issue's targets:
   - every damaged rear part group (bumper, back glass, tailgate/trunk, rear lights) found with
     confidence (a finding on a part of the group that needs no review);
   - no confident finding on the clean front bumper, hood, windscreen, front lights or mirrors;
   - the document / VIN / interior photos typed as such and given no exterior damage findings;
   - no photo flagged as a different vehicle.
2. ``car_damage/coco_car_damage_lplenka`` (train + val, 68 photos with part AND damage polygons;
   each photo one case): case-level damaged-part recall and precision. A labelled part (headlamp,
   rear_bumper, door, hood, front_bumper) is damaged when a damage polygon covers at least
   :data:`MIN_OVERLAP_PX` of its pixels; carcheck's DSMLR parts are mapped onto those five classes
   (both lights of a side onto headlamp, the four doors onto door); findings on other parts are
   outside what the set labels and are not counted. Rows for the report's confident per-part findings
   and for all per-part findings.
   Caveat: these 68 photos are also in lensor_severity, whose train split trained the damage filter
   head (not the CarDD damage segmenter or the DSMLR part model).

Run: python bench/cases.py   (about 1-2 minutes on 2 cores; writes bench/results/cases.json)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CASE = DATA / "cases" / "salvage_panamera_167111"
LPLENKA = DATA / "car_damage" / "coco_car_damage_lplenka"

#: The real case's photos as PROVENANCE.md describes them (looked at, not labelled).
NON_EXTERIOR = {"01": "document", "07": "interior", "08": "interior", "09": "vin_dashboard", "11": "interior"}
REAR_GROUPS = {"bumper": {"back_bumper"}, "back glass": {"back_glass"}, "tailgate/trunk": {"tailgate", "trunk"},
               "rear lights": {"back_left_light", "back_right_light"}}
CLEAN_FRONT = {"front_bumper", "hood", "front_glass", "front_left_light", "front_right_light", "left_mirror",
               "right_mirror"}
#: DSMLR part -> the lplenka part class it is labelled as.
TO_LPLENKA = {"front_left_light": "headlamp", "front_right_light": "headlamp", "back_left_light": "headlamp",
              "back_right_light": "headlamp", "back_bumper": "rear_bumper", "front_bumper": "front_bumper",
              "hood": "hood", "front_left_door": "door", "front_right_door": "door", "back_left_door": "door",
              "back_right_door": "door"}
MIN_OVERLAP_PX = 100  # at 1024 x 1024: a damage polygon touching a part by a few boundary pixels does not count


def real_case(assessor) -> dict:
    photos = sorted(CASE.glob("167111-*.png"))
    report, _ = assessor.assess(photos, case_id="panamera")
    # the report's confident statements: its per-part findings (schema >= 1.8); the per-(part, type)
    # findings' own flags are kept beside them for comparison
    confident = [f for f in report.parts if not f.needs_review]
    confident_pairs = [f for f in report.findings if not f.needs_review]
    groups = {g: sorted({f"{f.part}:{'/'.join(f.damages)}" for f in confident if f.part in parts})
              for g, parts in REAR_GROUPS.items()}
    on_clean = sorted(f"{f.part}:{'/'.join(f.damages)} (C_refined {f.c_refined:.2f}, K_agree {f.views_damaged}/"
                      f"{f.views_visible} views)" for f in confident if f.part in CLEAN_FRONT)
    non_ext = {}
    for p in report.photos:
        n = Path(p.path).stem.split("-")[-1]
        if n in NON_EXTERIOR:
            typed = p.photo_type.type if p.photo_type is not None else None
            findings = sorted({f"{f.part}:{f.damage}" for f in report.findings if p.path in f.photos})
            non_ext[n] = {"expected": NON_EXTERIOR[n], "typed": typed, "status": p.status,
                          "typed_right": typed == NON_EXTERIOR[n], "exterior_findings": len(findings),
                          "handled": typed == NON_EXTERIOR[n] and not findings}
    flagged = list(report.consistency.different_vehicle) if report.consistency is not None else []
    return {
        "photos": len(photos), "findings": len(report.findings), "damaged_parts": len(report.parts),
        "confident_parts": len(confident), "parts_for_review": sum(f.needs_review for f in report.parts),
        "confident_part_type_findings": len(confident_pairs),
        "parts": [f.model_dump(mode="json") for f in report.parts],
        "rear_groups_found_with_confidence": groups,
        "rear_groups_found": sum(bool(v) for v in groups.values()), "rear_groups": len(groups),
        "confident_findings_on_clean_front_parts": on_clean,
        "non_exterior_photos": non_ext,
        "non_exterior_handled": sum(v["handled"] for v in non_ext.values()), "non_exterior": len(non_ext),
        "different_vehicle_flags": [Path(x).name for x in flagged],
        "vehicle": None if report.vehicle is None else report.vehicle.model_dump(mode="json"),
    }


def lplenka_truth(json_path: Path) -> list[tuple[Path, set[str]]]:
    """(photo, lplenka part classes with damage on them) for every image of one annotation file."""
    from carcheck.data.coco import CocoSource

    src = CocoSource(json_path)
    out = []
    for im in src.images:
        inst = src.instances(im.id)
        damage = np.zeros((im.height, im.width), bool)
        for i in inst:
            if i.category == "damage":
                damage |= i.to_mask(im.height, im.width).astype(bool)
        parts = {i.category for i in inst if i.category != "damage"
                 and int((i.to_mask(im.height, im.width).astype(bool) & damage).sum()) >= MIN_OVERLAP_PX}
        out.append((im.path, parts))
    return out


def lplenka(assessor) -> dict:
    items = [x for split in ("train", "val") for x in lplenka_truth(LPLENKA / split / "COCO_merged_annos.json")]
    counts = {k: {"tp": 0, "fp": 0, "fn": 0} for k in ("confident", "all")}
    failed = 0
    for path, truth in items:
        report, _ = assessor.assess([path], case_id=path.stem)
        if report.photos[0].status != "assessed":
            failed += 1
        for key in counts:
            found = {TO_LPLENKA[f.part] for f in report.parts
                     if f.part in TO_LPLENKA and (key == "all" or not f.needs_review)}
            counts[key]["tp"] += len(found & truth)
            counts[key]["fp"] += len(found - truth)
            counts[key]["fn"] += len(truth - found)
    rows = {}
    for key, c in counts.items():
        rec = c["tp"] / max(1, c["tp"] + c["fn"])
        prec = c["tp"] / max(1, c["tp"] + c["fp"])
        rows[key] = {**c, "recall": round(rec, 4), "precision": round(prec, 4)}
    return {"photos": len(items), "photos_not_assessed": failed,
            "damaged_parts_labelled": sum(len(t) for _, t in items), "min_overlap_px": MIN_OVERLAP_PX, **rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cases.json")
    args = ap.parse_args()
    for d in (CASE, LPLENKA):
        if not d.is_dir():
            raise SystemExit(f"needs {d} (../shared/data)")
    import torch

    torch.set_flush_denormal(True)
    from carcheck.models.runtime import cpu_info
    from carcheck.pipeline.assess import Assessor
    from carcheck.report.schema import AssessConfig

    t0 = time.time()
    assessor = Assessor(AssessConfig(threads=2, gradcam=False))
    case = real_case(assessor)
    lp = lplenka(assessor)
    targets = {
        "rear_groups_found_with_confidence": f"{case['rear_groups']} of {case['rear_groups']}",
        "confident_findings_on_clean_front_parts": 0, "non_exterior_handled": f"{case['non_exterior']} of "
        f"{case['non_exterior']}", "different_vehicle_flags": 0}
    met = {"rear_groups": case["rear_groups_found"] == case["rear_groups"],
           "clean_front": not case["confident_findings_on_clean_front_parts"],
           "non_exterior": case["non_exterior_handled"] == case["non_exterior"],
           "different_vehicle": not case["different_vehicle_flags"]}
    res = {"real_case": case, "lplenka": lp, "targets": targets, "met": met, "cpu": cpu_info(),
           "date": dt.date.today().isoformat(), "wall_s": round(time.time() - t0, 1)}
    args.out.write_text(json.dumps(res, indent=2) + "\n")

    print(f"Real case salvage_panamera_167111 ({case['photos']} photos): {case['findings']} (part, type) findings; "
          f"{case['damaged_parts']} parts with damage, {case['confident_parts']} confident, "
          f"{case['parts_for_review']} for review")
    print(f"{'check':<44}{'measured':<34}{'target':<10}met")
    print(f"{'rear part groups found with confidence':<44}{case['rear_groups_found']} of {case['rear_groups']:<29}"
          f"{'all':<10}{met['rear_groups']}")
    for g, v in case["rear_groups_found_with_confidence"].items():
        print(f"    {g:<40}{', '.join(v) or '-'}")
    print(f"{'confident findings on clean front parts':<44}{len(case['confident_findings_on_clean_front_parts']):<34}"
          f"{'0':<10}{met['clean_front']}")
    for f in case["confident_findings_on_clean_front_parts"]:
        print(f"    {f}")
    print(f"{'document / VIN / interior photos handled':<44}{case['non_exterior_handled']} of {case['non_exterior']:<29}"
          f"{'all':<10}{met['non_exterior']}")
    for n, v in case["non_exterior_photos"].items():
        print(f"    {n}: expected {v['expected']}, typed {v['typed']}, {v['status']}, "
              f"{v['exterior_findings']} exterior findings")
    print(f"{'photos flagged as a different vehicle':<44}{len(case['different_vehicle_flags']):<34}{'0':<10}"
          f"{met['different_vehicle']}")
    print(f"\nlplenka (train+val, {lp['photos']} one-photo cases, {lp['damaged_parts_labelled']} damaged parts labelled; "
          f"{lp['photos_not_assessed']} not assessed)")
    print(f"{'findings':<12}{'recall':>8}{'precision':>11}{'TP':>5}{'FP':>5}{'FN':>5}")
    for key in ("confident", "all"):
        r = lp[key]
        print(f"{key:<12}{r['recall']:>8.3f}{r['precision']:>11.3f}{r['tp']:>5}{r['fp']:>5}{r['fn']:>5}")
    print(f"-> {args.out} ({res['wall_s']} s, {res['cpu']['cpu_model']})")


if __name__ == "__main__":
    main()
