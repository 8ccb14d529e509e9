"""Privacy blur: recall of the face and plate detectors per size band, false regions, ms per photo (issue 31).

Run from the repository root after building the privacy sets (``../shared/data/privacy/README.md``)::

    python bench/accuracy/privacy.py [--data data/privacy] [--limit N]

Sets: the val splits of the built sets (plates: 300 Open Images photos, 405 boxes; faces: 69 WIDER FACE
street/crowd/vehicle photos, 1,267 boxes) and, for false regions, ``bench/data/privacy_clean.txt``: photos of
``../shared/data/car_parts/testset`` that show a whole car with no plate area and no person (checked by eye;
the source had already blurred the plates of its other photos).

Per labelled box (by its short side: < 10, 10-19, 20-39, >= 40 px):
- **covered**: >= 70% of its area lies inside the union of the detector's regions (any kind; what blurring needs);
- **IoU recall**: a region of the same kind whose own box (the region before its grow) has IoU >= 0.5.
False regions: per clean car photo, every region; on the plate val photos, regions that touch no labelled box.
ms per photo: the detector alone on each photo (decoded, RGB), median over the val photos, this machine's threads.

Detectors: ``head`` (the shipped one, :mod:`carcheck.models.privacy`, on an fp32 pass), ``head_bf16`` (the same
on a bf16 pass: the shipped default where the CPU has native bf16, as in the assessment), ``head_768`` (the same
head on a 768-px pass: tried for small plates, not shipped), ``head_recall`` (the same head keeping every region
that reaches 0.3: the recall-first operating point of the tune photos, not shipped), ``haar`` (the OpenCV cascades
it replaced), ``rapidocr_det`` (plates only: the OCR package's PP-OCRv4 text detector, every text box counts as a
plate) and, where ``facenet_pytorch`` is importable (it pins torch < 2.3, so it is not a dependency; put its unpacked
wheel on ``PYTHONPATH``), ``mtcnn`` (faces only). The baselines' boxes are grown by 15% + 2 px on every side,
the head's by its shipped post-processing (30% + 2 px).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import DATA, RESULTS, ROOT, clock, write_results  # noqa: E402

import numpy as np  # noqa: E402

BANDS = ((0, 10, "<10"), (10, 20, "10-19"), (20, 40, "20-39"), (40, 10 ** 9, ">=40"))
TARGETS = {"plate_covered": 0.93, "face_covered_min16px": 0.88, "false_regions_per_clean_photo": 0.2,
           "ms_per_photo_both": 40.0, "report_s_per_photo_max": 0.165}
CLEAN_LIST = ROOT / "bench" / "data" / "privacy_clean.txt"


def _grow(x, y, w, h, H, W):
    from carcheck.models.privacy import GROW, GROW_PX

    gx, gy = w * GROW + GROW_PX, h * GROW + GROW_PX
    x0, y0 = max(0, int(x - gx)), max(0, int(y - gy))
    return x0, y0, min(W, int(np.ceil(x + w + gx))) - x0, min(H, int(np.ceil(y + h + gy))) - y0


def haar(image):
    """The cascades the report used before issue 31 (frontal + profile faces, Russian plates), at <= 1024 px."""
    import cv2

    cascades = (("face", "haarcascade_frontalface_default.xml", 5, (24, 24)),
                ("face", "haarcascade_profileface.xml", 5, (24, 24)),
                ("plate", "haarcascade_russian_plate_number.xml", 4, (40, 13)))
    H, W = image.shape[:2]
    s = min(1.0, 1024 / max(H, W))
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if s < 1:
        g = cv2.resize(g, (round(W * s), round(H * s)), interpolation=cv2.INTER_AREA)
    g = cv2.equalizeHist(g)
    out = []
    for kind, fn, nb, ms in cascades:
        c = _HAAR.setdefault(fn, cv2.CascadeClassifier(cv2.data.haarcascades + fn))
        for x, y, w, h in c.detectMultiScale(g, scaleFactor=1.1, minNeighbors=nb, minSize=ms):
            out.append((kind, _grow(*(v / s for v in (x, y, w, h)), H, W), 1.0))
    return out


_HAAR: dict = {}


def rapidocr_det(image):
    """Every text box of RapidOCR's PP-OCRv4 detector, as a plate region."""
    from carcheck.models.ocr import engine

    boxes, _ = engine().text_det(np.ascontiguousarray(image[..., ::-1]))
    H, W = image.shape[:2]
    out = []
    for q in boxes if boxes is not None else []:
        x0, y0 = q[:, 0].min(), q[:, 1].min()
        out.append(("plate", _grow(x0, y0, q[:, 0].max() - x0, q[:, 1].max() - y0, H, W), 1.0))
    return out


def mtcnn_detector():
    """facenet-pytorch's MTCNN (min face 12 px), or None where it does not import."""
    try:
        from facenet_pytorch import MTCNN
    except Exception:  # noqa: BLE001 - optional comparison only
        return None
    m = MTCNN(keep_all=True, min_face_size=12, device="cpu")

    def run(image):
        boxes, probs = m.detect(image)
        H, W = image.shape[:2]
        return [("face", _grow(b[0], b[1], b[2] - b[0], b[3] - b[1], H, W), float(p))
                for b, p in zip(boxes if boxes is not None else [], probs if probs is not None else [])]
    return run


def head_detector(bf16: bool = False, longest: int = 512, accept: dict | None = None):
    from carcheck.models.privacy import PrivacyDetector

    d = PrivacyDetector(bf16=bf16, longest=longest)
    if accept is not None:
        d.accept = accept

    def run(image):
        return [(r.kind, r.bbox_xywh, r.score) for r in d.detect(image)]
    run.grow = d.grow
    return run


def _iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    i = ix * iy
    return i / max(1e-9, a[2] * a[3] + b[2] * b[3] - i)


def _ungrow(r, g):
    """A grown region back to the detector's own box (inverts the grow; approximate at the image border)."""
    from carcheck.models.privacy import GROW_PX

    x, y, w, h = r
    rw, rh = max(1.0, (w - 2 * GROW_PX) / (1 + 2 * g)), max(1.0, (h - 2 * GROW_PX) / (1 + 2 * g))
    return (x + (w - rw) / 2, y + (h - rh) / 2, rw, rh)


def score_image(regions, boxes, kind, shape, grow=None):
    """Per labelled box ``(short side, covered, iou_hit)``; and the regions touching no labelled box. Coverage uses
    the grown regions (what is blurred), IoU the detector's own boxes (``grow``: per kind, how they were grown)."""
    from carcheck.models.privacy import GROW

    grow = grow or {}
    H, W = shape
    m = np.zeros((H, W), bool)
    for _, (x, y, w, h), _ in regions:
        m[y:y + h, x:x + w] = True
    rows = []
    for x, y, w, h in boxes:
        x0, y0, x1, y1 = int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h))
        area = max(1, (y1 - y0) * (x1 - x0))
        cov = m[y0:y1, x0:x1].sum() / area >= 0.7
        hit = any(k == kind and _iou((x, y, w, h), _ungrow(r, grow.get(k, GROW))) >= 0.5 for k, r, _ in regions)
        rows.append((min(w, h), bool(cov), bool(hit)))
    false = sum(1 for _, r, _ in regions if all(_iou(r, b) == 0 for b in boxes))
    return rows, false


def _summary(rows):
    out = {}
    for lo, hi, name in BANDS + ((16, 10 ** 9, ">=16"), (0, 10 ** 9, "all")):
        sel = [r for r in rows if lo <= r[0] < hi]
        out[name] = {"boxes": len(sel), "covered": round(float(np.mean([r[1] for r in sel])), 4) if sel else None,
                     "iou_recall": round(float(np.mean([r[2] for r in sel])), 4) if sel else None}
    return out


def evaluate(name, fn, sets, clean, kinds, grow=None):
    from carcheck.data.images import load_image

    res, times = {"kinds": kinds}, []
    for kind in kinds:
        rows, false, n = [], 0, 0
        for path, boxes in sets[kind]:
            img = load_image(path)
            regions, dt = clock(fn, img)
            times.append(dt)
            r, f = score_image(regions, boxes, kind, img.shape[:2], grow)
            rows += r
            false += f
            n += 1
        res[kind] = _summary(rows)
        res[kind]["false_regions_per_val_photo"] = round(false / max(1, n), 3)
    fc = [len(fn(load_image(p))) for p in clean]
    res["false_regions_per_clean_photo"] = round(float(np.mean(fc)), 3) if fc else None
    res["ms_per_photo"] = round(1000 * float(np.median(times)), 1)
    return res


def load_sets(data: Path, limit: int | None):
    sets = {}
    for kind, folder in (("plate", "plates"), ("face", "faces")):
        coco = json.loads((data / folder / "labels_val.json").read_text())
        boxes: dict = {}
        for a in coco["annotations"]:
            boxes.setdefault(a["image_id"], []).append(a["bbox"])
        sets[kind] = [(data / folder / "images" / Path(im["file_name"]).name, boxes.get(im["id"], []))
                      for im in coco["images"]][:limit]
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "privacy")
    ap.add_argument("--limit", type=int, default=None, help="first N val photos per set (a quick look)")
    ap.add_argument("--detectors", default="head,head_bf16,head_768,head_recall,haar,rapidocr_det,mtcnn")
    ap.add_argument("--out", type=Path, default=RESULTS / "privacy.json")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    if not (a.data / "plates" / "labels_val.json").exists():
        sys.exit(f"privacy sets not built in {a.data}: bash ../shared/data/privacy/build_privacy.sh ... {a.data}")
    sets = load_sets(a.data, a.limit)
    clean = [DATA / "car_parts" / "testset" / "JPEGImages" / n.strip() for n in CLEAN_LIST.read_text().splitlines()
             if n.strip() and not n.startswith("#")][:a.limit]
    want = a.detectors.split(",")
    found = {"head": (head_detector, ["plate", "face"]),
             "head_bf16": (lambda: head_detector(bf16=True), ["plate", "face"]),
             "head_768": (lambda: head_detector(longest=768), ["plate", "face"]),
             "head_recall": (lambda: head_detector(accept={"plate": 0.3, "face": 0.3}), ["plate", "face"]),
             "haar": (lambda: haar, ["plate", "face"]),
             "rapidocr_det": (lambda: rapidocr_det, ["plate"]), "mtcnn": (mtcnn_detector, ["face"])}
    results = {}
    for name in want:
        make, kinds = found[name]
        fn = make()
        if fn is None:
            print(f"{name}: not importable, skipped")
            continue
        results[name] = evaluate(name, fn, sets, clean, kinds, getattr(fn, "grow", None))
        r = results[name]
        for kind in kinds:
            s = r[kind]
            print(f"{name:13s} {kind:5s} " + " ".join(f"{b}:{s[b]['covered']}/{s[b]['iou_recall']}({s[b]['boxes']})"
                                                    for b in ("<10", "10-19", "20-39", ">=40", ">=16", "all"))
                  + f" false/val photo {s['false_regions_per_val_photo']}")
        print(f"{name:13s} false/clean photo {r['false_regions_per_clean_photo']}  ms/photo {r['ms_per_photo']}")
    out = {"sets": {k: {"photos": len(v), "boxes": sum(len(b) for _, b in v)} for k, v in sets.items()},
           "clean_photos": len(clean), "targets": TARGETS, "detectors": results,
           "definitions": {"covered": ">= 70% of the labelled box's area inside the union of the regions",
                           "iou_recall": "a region of the same kind whose box before its grow has IoU >= 0.5",
                           "bands": "short side of the labelled box in px of the stored photo"}}
    write_results(a.out, out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
