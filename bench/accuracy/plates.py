"""Licence-plate text (issue 30 item 2): exact-match and character accuracy of the plate reader + rules on
labelled dev-case photos, false reads on photos without a legible plate, and ms per plate read.

Labels: ``bench/data/plate_labels.csv`` (photo under ``data/cases_dev``, the plate of the car the photo is
of, as a person reads it at full resolution, letters and digits only; empty = that car shows no legible
plate; a plate of another car in the background is never a label). The photos: every dev-case photo on
which the shipped privacy head finds a plate region at least 100 px wide (223 photos, found once with
the head of commit 1cb6c37; 61 show their car's plate legibly, most of the others a dealer's "GOLD COAST
CAR YARD" plate cover, an empty plate recess or no plate at all). The dev cases are a development set: the reader's
settings (detector size 160 px, score 0.8) were chosen by looking at their plate crops, so these numbers
are not held out.

Pipeline scored: the privacy head's regions on the photo (:meth:`PrivacyDetector.detect`), then
:func:`carcheck.pipeline.plate.read_plates` (crop at stored resolution, read, the registration rules), as
the assessment runs them. Readers compared:
- ``shipped``: :func:`carcheck.models.ocr.read_plate` (PP-OCRv4 detection with the crop's shorter side at
  160 px, recognition);
- ``det736``: the same models at the package's default detector size (shorter side 736 px, angle
  classifier on): what calling the general reader on each crop would do;
- ``rec_only``: recognition on the crop without detection (the crop is taken as one text line).

Exact = the folded read (O/Q -> 0, I -> 1, as the case comparison folds) equals the folded label; character
accuracy = max(0, 1 - edit distance / label length), no read = 0. False reads: photos without a legible
plate on which a plate is read (on the dev cases: plates of other cars parked behind). ms: median of the reader over the crops it read (2 threads).

Run: OMP_NUM_THREADS=2 python bench/accuracy/plates.py [--cases-dev data/cases_dev]
Prints a table; writes bench/results/plates.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import RESULTS, ROOT, stopwatch, write_results  # noqa: E402

import numpy as np  # noqa: E402

from carcheck.data.images import load_image  # noqa: E402
from carcheck.models import ocr  # noqa: E402
from carcheck.models.privacy import detector  # noqa: E402
from carcheck.pipeline.plate import edit_distance, fold, read_plates  # noqa: E402

LABELS = ROOT / "bench" / "data" / "plate_labels.csv"


def readers() -> dict:
    """name -> (crop -> [(text, score)]), each timed per call into its own list."""
    full = ocr.engine()

    def det736(crop):
        res, _ = full(np.ascontiguousarray(crop[:, :, ::-1]))
        return [(t, float(s)) for _, t, s in (res or [])]

    def rec_only(crop):
        res, _ = full(np.ascontiguousarray(crop[:, :, ::-1]), use_det=False, use_cls=False, use_rec=True)
        return [(res[0][0], float(res[0][1]))] if res else []

    return {"shipped": ocr.read_plate, "det736": det736, "rec_only": rec_only}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases-dev", type=Path, default=ROOT / "data" / "cases_dev")
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--out", type=Path, default=RESULTS / "plates.json")
    args = ap.parse_args()

    rows = list(csv.DictReader(args.labels.open(encoding="utf-8")))
    det = detector()
    photos = []
    for r in rows:
        p = args.cases_dev / r["photo"]
        if not p.exists():
            print(f"missing {p} (build the dev cases: $CARCHECK_DATA/cases_dev/README.md)")
            continue
        image = load_image(p)
        photos.append((r, image, det.detect(image)))
    res = {"labels": str(args.labels.relative_to(ROOT)), "photos": len(photos),
           "legible": sum(bool(r["plate"]) for r, _, _ in photos), "readers": {}}
    for name, fn in readers().items():
        ms: list[float] = []

        def timed_reader(crop, fn=fn):
            elapsed = stopwatch()
            out = fn(crop)
            ms.append(elapsed() * 1000)
            return out

        per = []
        for r, image, regions in photos:
            read = read_plates(image, regions, 1.0, timed_reader)
            got = read.text if read else ""
            label = r["plate"]
            per.append({"photo": r["photo"], "label": label, "read": got,
                        "exact": bool(label) and fold(got) == fold(label),
                        "char_accuracy": round(max(0.0, 1 - edit_distance(fold(got), fold(label)) / len(label)), 4)
                        if label else None, "score": round(read.score, 3) if read else None})
        leg = [p for p in per if p["label"]]
        clean = [p for p in per if not p["label"]]
        res["readers"][name] = {
            "legible_n": len(leg), "exact": round(sum(p["exact"] for p in leg) / max(1, len(leg)), 4),
            "char_accuracy": round(statistics.mean(p["char_accuracy"] for p in leg), 4) if leg else None,
            "wrong_reads_on_legible": sum(bool(p["read"]) and not p["exact"] for p in leg),
            "no_legible_n": len(clean), "false_reads": sum(bool(p["read"]) for p in clean),
            "crops_read": len(ms), "ms_per_crop_median": round(statistics.median(ms), 1) if ms else None,
            "ms_per_photo_mean": round(sum(ms) / max(1, len(photos)), 1), "photos": per}
    print(f"\n{'reader':10s} {'legible':>7s} {'exact':>6s} {'char acc':>8s} {'wrong':>5s} {'false reads':>11s} "
          f"{'ms/crop':>7s} {'ms/photo':>8s}")
    for name, s in res["readers"].items():
        print(f"{name:10s} {s['legible_n']:7d} {s['exact']:6.3f} {s['char_accuracy']:8.3f} {s['wrong_reads_on_legible']:5d} "
              f"{s['false_reads']:4d} of {s['no_legible_n']:3d} {s['ms_per_crop_median']:7.1f} {s['ms_per_photo_mean']:8.1f}")
    misses = [p for p in res["readers"]["shipped"]["photos"] if p["label"] and not p["exact"]]
    print("\nshipped reader, legible plates not read exactly:", ", ".join(
        f"{p['photo']} ({p['label']} -> {p['read'] or '-'})" for p in misses) or "none")
    falses = [p for p in res["readers"]["shipped"]["photos"] if not p["label"] and p["read"]]
    print("shipped reader, reads on photos without a legible plate:", ", ".join(
        f"{p['photo']} ({p['read']})" for p in falses) or "none")
    write_results(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
