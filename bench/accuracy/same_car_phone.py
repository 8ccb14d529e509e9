"""Same-car check on phone photos (issue 16, item 5): the shipped verification model's distances on
pairs of real phone photos, against the threshold it was calibrated with on surveillance crops.

Pairs:
- same car: two photos of one used-car listing in ``car_damage/lensor_severity`` (the listing id
  starts the file name, e.g. ``9621639-honda-...``; near-identical copies of one photo, dHash
  Hamming <= 6 incl. the mirror image, are left out: they say nothing about telling cars apart),
  and every pair of the real case's exterior photos (``cases/salvage_panamera_167111``: 02-06,
  10, 12; one Porsche Panamera);
- different cars: photos of two different listings (all pairs), and the real case's exterior
  photos against every listing photo.

The listings are split in two halves by a hash of the listing id: phone thresholds are chosen on
half A and every rate is reported on half B, beside the shipped threshold's rates on the same half-B
pairs. Two operating points: the equal error rate, and the one the assessment needs (a "different
vehicle?" flag sends a photo to review, so false flags on same-car cases must stay rare: at most
:data:`MAX_FALSE_FLAGS` of half A's same-car pairs). ``recalibrate`` is true only when the latter is
no worse than the shipped threshold on half B in both error rates and better in one (then the
assessment should use it for phone photos); otherwise the shipped threshold stays.

Run: python bench/accuracy/same_car_phone.py   (about 2 minutes on 2 cores; writes bench/results/same_car_phone.json)
"""

from __future__ import annotations

import sys
import argparse
import datetime as dt
import hashlib
import itertools
import json
import re
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import numpy as np
import torch
from PIL import Image

LENSOR = DATA / "car_damage" / "lensor_severity" / "images"
CASE = DATA / "cases" / "salvage_panamera_167111"
CASE_EXTERIOR = ("02", "03", "04", "05", "06", "10", "12")  # PROVENANCE.md: the car's outside
LISTING = re.compile(r"^(\d{6,8})-")
MAX_FALSE_FLAGS = 0.05  # of same-car pairs: the review cost a user accepts from a hint


def listing_photos() -> dict[str, list[Path]]:
    """Listing id -> its photos (listings with at least one photo whose name carries an id)."""
    out: dict[str, list[Path]] = {}
    for split in ("train", "val", "test"):
        for p in sorted((LENSOR / split).glob("*.jpg")):
            m = LISTING.match(p.name)
            if m:
                out.setdefault(m.group(1), []).append(p)
    return out


def half(listing: str) -> str:
    """'A' (calibration) or 'B' (report), fixed by the listing id's hash."""
    return "A" if hashlib.sha256(listing.encode()).digest()[0] % 2 == 0 else "B"


def near_identical(a: Path, b: Path) -> bool:
    import imagehash

    ha, hb = imagehash.dhash(Image.open(a)), imagehash.dhash(Image.open(b))
    hm = imagehash.dhash(Image.open(b).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    return min(ha - hb, ha - hm) <= 6


def rates(same: np.ndarray, diff: np.ndarray, thr: float) -> dict:
    """False "different vehicle?" flags (same-car pairs above ``thr``) and false accepts
    (different-car pairs at or below it), as fractions of their pairs."""
    return {"threshold": round(float(thr), 4), "false_different_flags": round(float((same > thr).mean()), 4),
            "false_accepts": round(float((diff <= thr).mean()), 4), "same_pairs": int(same.size),
            "different_pairs": int(diff.size)}


def eer_threshold(same: np.ndarray, diff: np.ndarray) -> float:
    """The distance where false flags = false accepts (equal error rate), from the pairs given."""
    cand = np.unique(np.concatenate([same, diff]))
    gap = [abs((same > t).mean() - (diff <= t).mean()) for t in cand]
    return float(cand[int(np.argmin(gap))])


def flag_rate_threshold(same: np.ndarray, max_flags: float) -> float:
    """The smallest distance threshold with at most ``max_flags`` of the same-car pairs above it."""
    return float(np.quantile(same, 1 - max_flags, method="higher"))


def auroc(same: np.ndarray, diff: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(same.size), np.zeros(diff.size)]
    return float(roc_auc_score(y, -np.r_[same, diff]))  # smaller distance = same car


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "same_car_phone.json")
    args = ap.parse_args()
    if not LENSOR.is_dir() or not CASE.is_dir():
        raise SystemExit(f"needs {LENSOR} and {CASE} (../shared/data)")
    torch.set_flush_denormal(True)
    from carcheck.data.images import load_image
    from carcheck.models.backbone import inference_context
    from carcheck.models.inference import to_input_tensor
    from carcheck.models.runtime import cpu_info
    from carcheck.pipeline.assess import Assessor
    from carcheck.pipeline.image_heads import PhotoHeadOutputs
    from carcheck.schema import AssessConfig

    t0 = time.time()
    a = Assessor(AssessConfig(threads=2, gradcam=False))
    head, info = a.heads.get("verification")
    shipped = float(info.threshold)

    def embed(p: Path) -> torch.Tensor:
        x = to_input_tensor(load_image(p), a.config.longest_side)
        with inference_context(a.bf16):
            return a.heads.run_standalone(x, PhotoHeadOutputs()).embedding.float()

    listings = listing_photos()
    paths = [p for v in listings.values() for p in v]
    case_paths = [CASE / f"167111-{n}.png" for n in CASE_EXTERIOR]
    emb = {p: embed(p) for p in paths + case_paths}

    def dist(p: Path, q: Path) -> float:
        return float(head.distance(emb[p][None], emb[q][None])[0])

    pairs: dict[str, dict[str, list[float]]] = {h: {"same": [], "diff": []} for h in "AB"}
    skipped_identical = 0
    for lid, ps in listings.items():
        for p, q in itertools.combinations(ps, 2):
            if near_identical(p, q):
                skipped_identical += 1
                continue
            pairs[half(lid)]["same"].append(dist(p, q))
    ids = sorted(listings)
    for i, j in itertools.combinations(range(len(ids)), 2):
        hi, hj = half(ids[i]), half(ids[j])
        if hi != hj:
            continue  # cross-half pairs are left out: each half's pairs are its own
        for p in listings[ids[i]]:
            for q in listings[ids[j]]:
                pairs[hi]["diff"].append(dist(p, q))
    case_same = [dist(p, q) for p, q in itertools.combinations(case_paths, 2)]
    case_diff = {h: [dist(c, p) for c in case_paths for lid, ps in listings.items() if half(lid) == h for p in ps]
                 for h in "AB"}
    arr = {h: {k: np.array(v) for k, v in d.items()} for h, d in pairs.items()}
    eer_thr = eer_threshold(arr["A"]["same"], arr["A"]["diff"])
    phone_thr = flag_rate_threshold(arr["A"]["same"], MAX_FALSE_FLAGS)
    b_same, b_diff = arr["B"]["same"], arr["B"]["diff"]
    res = {
        "what": "same-car check on phone photos: lensor_severity listings (same listing = same car) and the real case",
        "model": "embedding_verification_lite0 (learned on surveillance crops, vn_traffic_reid_2cam)",
        "pairs_left_out_as_near_identical_copies": skipped_identical,
        "listings": len(listings), "photos": len(paths),
        "auroc_half_B": round(auroc(b_same, b_diff), 4),
        "shipped_threshold_half_B": rates(b_same, b_diff, shipped),
        "eer_threshold_from_half_A": rates(arr["A"]["same"], arr["A"]["diff"], eer_thr),
        "eer_threshold_on_half_B": rates(b_same, b_diff, eer_thr),
        "max_false_flags": MAX_FALSE_FLAGS,
        "phone_threshold_from_half_A": rates(arr["A"]["same"], arr["A"]["diff"], phone_thr),
        "phone_threshold_on_half_B": rates(b_same, b_diff, phone_thr),
        "real_case": {
            "same_pairs": len(case_same),
            "max_same_distance": round(max(case_same), 4),
            "false_different_flags_shipped": int(sum(d > shipped for d in case_same)),
            "false_different_flags_phone": int(sum(d > phone_thr for d in case_same)),
            "false_different_flags_eer": int(sum(d > eer_thr for d in case_same)),
            "false_accepts_vs_half_B_listings_shipped": round(float(np.mean(np.array(case_diff["B"]) <= shipped)), 4),
            "false_accepts_vs_half_B_listings_phone": round(float(np.mean(np.array(case_diff["B"]) <= phone_thr)), 4),
        },
        "distance_quantiles_half_B": {
            k: [round(float(q), 4) for q in np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])] for k, v in arr["B"].items()},
        "cpu": cpu_info(), "date": dt.date.today().isoformat(), "wall_s": round(time.time() - t0, 1),
    }
    s, p = res["shipped_threshold_half_B"], res["phone_threshold_on_half_B"]
    fa, fb = (s["false_different_flags"], s["false_accepts"]), (p["false_different_flags"], p["false_accepts"])
    res["recalibrate"] = bool(fb[0] <= fa[0] and fb[1] <= fa[1] and fb != fa)
    write_results(args.out, res, indent=2)
    print(f"{len(listings)} listings, {len(paths)} photos; {skipped_identical} near-identical same-listing pairs left out")
    print(f"AUROC (half B): {res['auroc_half_B']:.3f}")
    print(f"{'threshold':<34}{'value':>8}{'false flags':>13}{'false accepts':>15}{'pairs same/diff':>18}")
    for name, r in (("shipped (surveillance EER), half B", s),
                    ("phone EER from half A, on half B", res["eer_threshold_on_half_B"]),
                    (f"phone <={MAX_FALSE_FLAGS:.0%} flags (A), on A", res["phone_threshold_from_half_A"]),
                    (f"phone <={MAX_FALSE_FLAGS:.0%} flags (A), on half B", p)):
        print(f"{name:<34}{r['threshold']:>8.4f}{r['false_different_flags']:>13.3f}{r['false_accepts']:>15.3f}"
              f"{r['same_pairs']:>9}/{r['different_pairs']}")
    print("real case:", json.dumps(res["real_case"]))
    print("recalibrate:", res["recalibrate"], "->", args.out)


if __name__ == "__main__":
    main()
