"""Study (issue 26, items 2 and 4): does a second look at each damage region, at full resolution, tell real
damage from the damage map's false alarms better than the map's own C_base?

On real cases the damage regions on clean parts (reflections, panel gaps, badges) have C_base as high as the
real damage (bench/cases.py --calibrate: no threshold on C_base reaches precision 0.9), and K_agree is the only
thing that keeps them out of the confident findings. A region verifier in the spirit of two-stage detectors'
second stage (Girshick et al., "Rich feature hierarchies...", CVPR 2014: a classifier on each proposal's crop,
trained with hard negatives) looks at a square crop around the region, cut from the photo at its own
resolution (not the 512 px network input), and says P(real damage).

Stages (each writes under ``runs/region_verifier/``):

- ``extract``: crops and their labels. Proposals are the shipped damage map's connected components
  (argmax not background, at network resolution) on CarDD train/valid/test, lensor train/val/test (photos
  with damage; a component is positive when >= 30% of its pixels lie on annotated damage, dilated by 2 px
  at network resolution, a hard negative when none does, else left out) and on clean cars (DSMLR car_parts
  and Stanford196 photos: every component a hard negative); plus every annotated damage instance as a
  positive. Real cases (dev, extra, demo) give the regions of their cached reports (``bench/cases.py``
  first), labelled by their part (1: in a damaged group, 0: seen clean). Features: the pooled 1280-d
  EfficientNet-Lite0 ImageNet features of the 224 px crop; the region's C_base (mean max damage probability)
  and area fraction are kept beside them for comparison.
- ``fit``: logistic regression on the fit split (C chosen on val by AUC), AUC on the test split and, per
  judged part of the real cases, AUC of the verifier's P (max over the part's regions) beside C_base's.

Run: python bench/studies/region_verifier.py extract && python bench/studies/region_verifier.py fit
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import DATA, RESULTS, ROOT, RUNS, write_results  # noqa: E402

OUT = RUNS / "region_verifier"
CROP = 224
CONTEXT = 1.5  # crop side = CONTEXT x the region's longer bbox side
MIN_CROP_FRACTION = 0.08  # ... and at least this share of the photo's longer side


def split_of(key: str) -> str:
    """Deterministic fit / val / test split (70 / 10 / 20) of a photo by the hash of its path."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10
    return "fit" if h < 7 else ("val" if h < 8 else "test")


def square_crop(img: np.ndarray, bbox) -> np.ndarray:
    """The ``CROP`` px square around ``bbox`` (x, y, w, h in the photo's px), with context, clamped inside."""
    from PIL import Image

    H, W = img.shape[:2]
    x, y, w, h = bbox
    side = max(max(w, h) * CONTEXT, MIN_CROP_FRACTION * max(H, W), 16)
    side = min(side, min(H, W))
    cx, cy = x + w / 2, y + h / 2
    x0 = int(round(min(max(cx - side / 2, 0), W - side)))
    y0 = int(round(min(max(cy - side / 2, 0), H - side)))
    s = int(round(side))
    return np.asarray(Image.fromarray(img[y0:y0 + s, x0:x0 + s]).resize((CROP, CROP), Image.BILINEAR))


class Extractor:
    """The shipped assessment's models (for proposals) and a frozen ImageNet Lite0 (for crop features), 2 threads."""

    def __init__(self) -> None:
        import torch

        from carcheck.models.backbone import build_backbone
        from carcheck.pipeline.runner import ModelRunner
        from carcheck.schema.config import AssessConfig

        torch.set_num_threads(2)
        self.torch = torch
        self.runner = ModelRunner(AssessConfig(threads=2, gradcam=False))
        self.backbone = build_backbone("lite0").eval()

    def proposals(self, img: np.ndarray):
        """Connected components of the damage argmax: ``[(mask at network res, bbox in photo px, c_base, area_frac)]``."""
        from scipy import ndimage

        pred = self.runner.predict(img, gate=False)
        prob = pred.damage
        lab = prob.argmax(0)
        h, w = lab.shape
        sy, sx = img.shape[0] / h, img.shape[1] / w
        comps, n = ndimage.label(lab > 0, structure=np.ones((3, 3)))
        out = []
        for i, sl in enumerate(ndimage.find_objects(comps), 1):
            m = comps == i
            area = int(m.sum())
            if area < 0.0005 * h * w:
                continue
            ys, xs = sl
            bbox = (xs.start * sx, ys.start * sy, (xs.stop - xs.start) * sx, (ys.stop - ys.start) * sy)
            out.append((m, bbox, float(prob[1:].max(0)[m].mean()), area / (h * w)))
        return out

    def features(self, crops: list[np.ndarray]) -> np.ndarray:
        """Pooled features ``(N, 1280)`` float32 of ``N`` crops ``(224, 224, 3)`` uint8, in batches of 32."""
        torch = self.torch
        from carcheck.models.backbone import inference_context

        feats = []
        for i in range(0, len(crops), 32):
            x = torch.from_numpy(np.stack(crops[i:i + 32])).permute(0, 3, 1, 2).float() / 255.0
            with torch.no_grad(), inference_context(None):
                out = self.backbone(x, with_pooled=True)
            feats.append(out.pooled.float().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 1280), np.float32)


def damaged_sources():
    """``[(name, coco json, max photos)]`` of the damage sets with masks (CarDD's COCO files written from its YOLO labels)."""
    from carcheck.data.yolo import coco_file_for_yolo

    cardd = ROOT / "data" / "cardd" / "data.yaml"
    lensor = DATA / "car_damage" / "lensor_severity" / "annotations"
    out = []
    for split, n in (("train", 900), ("valid", 300), ("test", 298)):
        out.append((f"cardd_{split}", coco_file_for_yolo(cardd, split, RUNS / "region_verifier" / "coco"), n))
    for split in ("train", "val", "test"):
        out.append((f"lensor_{split}", lensor / f"instances_{split}.json", 10_000))
    return out


def clean_photos() -> list[Path]:
    """Every DSMLR car_parts photo and 700 seeded Stanford196 photos (clean cars)."""
    parts = sorted((DATA / "car_parts").glob("*/JPEGImages/*"))
    stan = sorted((ROOT / "data" / "car_models" / "stanford196").glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    return parts + [stan[i] for i in sorted(rng.choice(len(stan), 700, replace=False))]


def extract(args) -> None:
    """Crops, labels and features of every source not yet extracted (module doc), under ``runs/region_verifier/``."""
    from PIL import Image
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    from carcheck.data.coco import CocoSource
    from carcheck.data.images import load_image

    ex = Extractor()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []  # (source, split, kind, label, c_base, area)

    def save(name, crops, meta):
        f = ex.features(crops)
        np.savez_compressed(OUT / f"{name}.npz", features=f, meta=np.array(meta, dtype=object))
        print(f"{name}: {len(meta)} crops, {sum(m[3] for m in meta)} positive", flush=True)

    for name, coco, n in damaged_sources():
        if (OUT / f"{name}.npz").is_file():
            continue
        src = CocoSource(coco)
        ids = sorted(src.coco.getImgIds())
        rng = np.random.default_rng(1)
        ids = [ids[i] for i in sorted(rng.choice(len(ids), min(n, len(ids)), replace=False))]
        split = "fit" if name.endswith("train") else ("val" if name.endswith(("valid", "val")) else "test")
        crops, meta = [], []
        for k, iid in enumerate(ids):
            entry = src.coco.imgs[iid]
            path = src._image_path(entry)
            img = load_image(path)
            H, W = int(entry["height"]), int(entry["width"])  # annotation px; the array may be decoded smaller
            s = img.shape[1] / W
            gt = np.zeros((H, W), bool)
            for inst in src.instances(iid):
                gt |= mask_utils.decode(inst.to_rle(H, W)).astype(bool)
                crops.append(square_crop(img, [v * s for v in inst.bbox]))
                meta.append((name, split, "gt", 1, -1.0, -1.0, str(path)))
            for m, bbox, cb, area in ex.proposals(img):
                mh, mw = m.shape
                gts = np.asarray(Image.fromarray(gt).resize((mw, mh)))
                gts = ndimage.binary_dilation(gts, iterations=2)
                frac = float(gts[m].mean())
                label = 1 if frac >= 0.3 else (0 if frac == 0 else None)
                if label is None:
                    continue
                crops.append(square_crop(img, bbox))
                meta.append((name, split, "proposal", label, cb, area, str(path)))
            if k % 100 == 0:
                print(f"  {name} {k}/{len(ids)}", flush=True)
        save(name, crops, meta)

    if not (OUT / "clean.npz").is_file():
        crops, meta = [], []
        for k, path in enumerate(clean_photos()):
            img = load_image(path)
            for m, bbox, cb, area in ex.proposals(img):
                crops.append(square_crop(img, bbox))
                meta.append(("clean", split_of(str(path.relative_to(path.parents[2]))), "proposal", 0, cb, area, str(path)))
            if k % 100 == 0:
                print(f"  clean {k}", flush=True)
        save("clean", crops, meta)

    if not (OUT / "cases.npz").is_file() or args.cases_again:
        crops, meta = cases_crops(args.cache)
        save("cases", crops, meta)


def cases_crops(cache: Path | None = None):
    """Crops of every region of the judged per-part findings in cached shipped case reports (``cache``: one
    ``runs/cases_cache/shipped-*`` folder; default the newest)."""
    from carcheck.data.images import decode_image
    from carcheck.evaluate.cases import load_expectations, part_labels

    cache = cache or max((RUNS / "cases_cache").glob("shipped-*"), key=lambda p: p.stat().st_mtime)
    exps = {p.stem: p for p in [*(DATA / "cases_dev" / "expectations").glob("*.json"),
                                *(ROOT / "bench" / "cases_extra" / "expectations").glob("*.json"),
                                *(DATA / "cases" / "expectations").glob("*.json")]}
    crops, meta, images = [], [], {}
    for f in sorted(cache.glob("*.json")):
        if f.stem not in exps:
            continue
        report = json.loads(f.read_text())
        for finding, y in part_labels(report, load_expectations(exps[f.stem])):
            for inst in finding.get("instances") or []:
                p = inst["photo"]
                if p not in images:
                    d = decode_image(p)  # bbox in the full photo's px; the array may be decoded smaller
                    images = {p: (d.array, d.array.shape[1] / d.width)}
                img, s = images[p]
                crops.append(square_crop(img, [v * s for v in inst["bbox_xywh"]]))
                meta.append(("case", f.stem, finding["part"], y, inst["score"], finding["c_base"], p))
    print(f"cases from {cache.name}")
    return crops, meta


def auc(y, s) -> float | None:
    """ROC AUC rounded to 4 places, None when ``y`` holds one class only."""
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, s)), 4) if len(set(y)) == 2 else None


def fit(args) -> None:
    """The verifier fitted and scored (module doc); writes ``--out``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data = {f.stem: np.load(f, allow_pickle=True) for f in sorted(OUT.glob("*.npz"))}
    X, meta = [], []
    for name, d in data.items():
        if name == "cases":
            continue
        X.append(d["features"])
        meta += [tuple(m) for m in d["meta"]]
    X = np.concatenate(X)
    split = np.array([m[1] for m in meta])
    y = np.array([int(m[3]) for m in meta])
    src = np.array([m[0].split("_")[0] for m in meta])
    kind = np.array([m[2] for m in meta])
    sc = StandardScaler().fit(X[split == "fit"])
    Z = sc.transform(X)
    best = None
    for C in (0.001, 0.003, 0.01, 0.03, 0.1):
        lr = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(Z[split == "fit"], y[split == "fit"])
        a = auc(y[split == "val"], lr.predict_proba(Z[split == "val"])[:, 1])
        print(f"C {C}: val AUC {a}")
        if best is None or a > best[0]:
            best = (a, C, lr)
    _, C, lr = best
    p = lr.predict_proba(Z)[:, 1]
    res = {"C": C, "counts": {}, "test": {}, "cases": {}}
    for s in ("fit", "val", "test"):
        res["counts"][s] = {"crops": int((split == s).sum()), "positive": int(y[split == s].sum())}
    t = split == "test"
    prop = kind == "proposal"
    res["test"]["all_auc"] = auc(y[t], p[t])
    res["test"]["proposals_auc"] = auc(y[t & prop], p[t & prop])
    cb = np.array([float(m[4]) for m in meta])
    res["test"]["proposals_auc_c_base"] = auc(y[t & prop], cb[t & prop])
    for s in ("cardd", "lensor"):
        sel = t & prop & ((src == s) | (src == "clean"))
        res["test"][f"{s}+clean_proposals_auc"] = auc(y[sel], p[sel])
        res["test"][f"{s}+clean_proposals_auc_c_base"] = auc(y[sel], cb[sel])
    if "cases" in data:
        d = data["cases"]
        pc = lr.predict_proba(sc.transform(d["features"]))[:, 1]
        parts = {}
        for m, v in zip(d["meta"], pc):
            key = (m[1], m[2])
            q = parts.setdefault(key, {"y": int(m[3]), "p": 0.0, "c_base": float(m[5]), "score": 0.0})
            q["p"] = max(q["p"], float(v))
            q["score"] = max(q["score"], float(m[4]))
        yy = [q["y"] for q in parts.values()]
        res["cases"] = {"parts": len(yy), "damaged": int(sum(yy)),
                        "auc_verifier": auc(yy, [q["p"] for q in parts.values()]),
                        "auc_c_base": auc(yy, [q["c_base"] for q in parts.values()]),
                        "auc_product": auc(yy, [q["p"] * q["c_base"] for q in parts.values()]),
                        "per_part": sorted([(k[0], k[1], q["y"], round(q["p"], 3), round(q["c_base"], 3))
                                            for k, q in parts.items()], key=lambda r: -r[3])}
        res["cases"]["leave_one_case_out"] = loco(args.cache, parts)
    print(json.dumps({k: v for k, v in res.items() if k != "cases"}, indent=1))
    c = res.get("cases") or {}
    print({k: v for k, v in c.items() if k != "per_part"})
    for r in c.get("per_part", [])[:30]:
        print(r)
    if args.out:
        write_results(args.out, res, indent=1)


def loco(cache: Path | None, parts: dict) -> dict:
    """P(part damaged) fitted leave-one-case-out (as ``bench/cases.py --calibrate``) on the report's features,
    with and without the verifier's P: AUC and ECE of the out-of-case probabilities, per feature set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from carcheck.evaluate.cases import load_expectations, part_labels, reliability
    from carcheck.pipeline.confidence import FEATURES

    cache = cache or max((RUNS / "cases_cache").glob("shipped-*"), key=lambda p: p.stat().st_mtime)
    exps = {p.stem: p for p in [*(DATA / "cases_dev" / "expectations").glob("*.json"),
                                *(ROOT / "bench" / "cases_extra" / "expectations").glob("*.json"),
                                *(DATA / "cases" / "expectations").glob("*.json")]}
    rows = []
    for f in sorted(cache.glob("*.json")):
        if f.stem in exps:
            for fd, y in part_labels(json.loads(f.read_text()), load_expectations(exps[f.stem])):
                pv = parts.get((f.stem, fd["part"]), {}).get("p", 0.0)
                rows.append((f.stem, [fd["features"][k] for k in FEATURES], pv, y))
    case = np.array([r[0] for r in rows])
    F, P, Y = np.array([r[1] for r in rows]), np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    out = {}
    for name, X in (("report features", F), ("report features + verifier", np.c_[F, P]),
                    ("verifier only", P[:, None]), ("c_base, k_agree, verifier", np.c_[F[:, :2], P])):
        p = np.zeros(len(Y))
        for c in sorted(set(case)):
            tr = case != c
            sc = StandardScaler().fit(X[tr])
            p[~tr] = LogisticRegression(C=1.0, max_iter=1000).fit(sc.transform(X[tr]), Y[tr]).predict_proba(
                sc.transform(X[~tr]))[:, 1]
        out[name] = {"auc": auc(Y, p), "ece": reliability(list(p), list(Y))["ece"],
                     "damaged_in_top10": int(Y[np.argsort(-p)[:10]].sum())}
        print(f"leave-one-case-out, {name}: {out[name]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=["extract", "fit"])
    ap.add_argument("--cases-again", action="store_true", help="Crop the case regions again (e.g. after bench/cases.py).")
    ap.add_argument("--cache", type=Path, default=None, help="The runs/cases_cache/shipped-* folder to read.")
    ap.add_argument("--out", type=Path, default=RESULTS / "region_verifier.json")
    args = ap.parse_args()
    extract(args) if args.stage == "extract" else fit(args)


if __name__ == "__main__":
    main()
