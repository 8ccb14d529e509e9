"""Label recipe of the photo-type head (issue 16, item 1): writes ``data/photo_type/labels.csv``.

Six types (the head's classes, sorted): ``document``, ``exterior_closeup``, ``exterior_full``,
``interior``, ``no_vehicle``, ``vin_dashboard`` (VIN plate / odometer / dashboard close-up).

Sources (shared sets from ``--root``; fetched public repositories from ``--mirrors``, each a git
directory named ``owner+name`` holding the commit below; a missing one is reported with the command
that gets it). Fetched images are extracted to ``--out`` (git-ignored ``data/``), resized to at most
1024 px on the longer side (the head sees 512 px) and never committed.

| type | source | licence |
|---|---|---|
| exterior_full | car_parts (DSMLR) trainingset + testset photos; stanford_cars_subset32 | DSMLR: none stated; Stanford Cars: research terms |
| exterior_closeup | derived: crops of car_parts photos around one annotated part (see below) | as car_parts |
| interior | compcars_style_interior_voc full photos, console / steering_wheel / gear_lever crops, and derived crops of the full photos | CompCars: non-commercial research |
| vin_dashboard | compcars `dashboard` (instrument cluster) crops; VIN plates: github.com/SultanovAR/show_vallib @ 3633284c9e3f3cdd6af386b00515284fe26ce88c `examples/yolo_example/data` (Roboflow "Vin detection" v7, CC BY 4.0, 256x256 stretched); odometers: TRODO (Data in Brief 2021) as committed in github.com/Meliodus254/Odometer-Mileage-Reader @ 77c9209f116cfc74b08c83bc5cf06f4168ee1d6e `trodo-v01/images` (originals only, not `_cropped` / `_result`; repo code MIT, TRODO published as CC BY 4.0 on Mendeley Data, not restated in the repo) | CC BY 4.0 |
| document | SROIE receipts (ICDAR 2019): github.com/zzzDavid/ICDAR-2019-SROIE @ 27be4271b251c256f695acbade9a801bffe85994 `data/img` (competition data, research use; repo code MIT); PHONE-SCAN smartphone photos of Russian A4 documents: github.com/slug183/phone-scan @ 175945bcb9fc0888d1901d7ba0b830efb69dc0a3 `dataset/*/IMA` (no licence stated: research/evaluation use only) | see row |
| no_vehicle | vehicle_presence/coco128 photos with has_vehicle == 0 | COCO: CC BY 4.0 annotations, Flickr photo terms |

Full view vs close-up (derived, a judgement call): every car_parts photo is a full view (the
DSMLR photos show the whole car or most of it). A close-up is a crop of a car_parts photo around
one annotated part instance: its box enlarged 1.6x (at least 40 px a side before enlarging), kept
only when the crop covers at most 30% of the photo and at most 25% of the union box of all the
photo's parts, i.e. it shows one part and its surroundings, not the car. Up to two crops per photo
(the largest qualifying parts of different classes). Interior crops: two random crops per interior
photo covering 35-60% of its side lengths.

Damaged exterior photos (issue 26, :func:`damaged_rows`): sampled from the *training* splits of CarDD,
lensor, lplenka and VDS (500 / 300 / 60 / 200), full view or close-up pseudo-labelled by the head shipped
before (they carry no such label); their held-out splits are what bench/accuracy/photo_type.py and
bench/studies/photo_type_gate.py report the share typed as exterior on. ``--no-damaged`` gives the
earlier recipe.

Sampling (seed 0; sized so that the features of every photo are computed once in about 20 minutes
on 2 shared CPU cores): 200 Stanford Cars photos (of 1,165), 200 VIN photos (one per Roboflow source
name), 200 TRODO photos, 120 SROIE receipts, 120 PHONE-SCAN photos.

Splits: car_parts/testset stays test (with its crops); everything else gets the seeded, stratified
70/15/15 split of :func:`carcheck.data.labels.assign_splits` over groups. A group joins (a) a photo
and every crop made from it, (b) source-declared identities (VIN: Roboflow source name; TRODO: the
minute in the file name, photos sent together; PHONE-SCAN: the document id, several captures of one
page; compcars: the source photo of a crop), (c) near-duplicates: dHash (64 bit) within 6 bits, of
the photo or its mirror image, across every source. So no near-duplicate straddles splits.

Run: python bench/accuracy/photo_type_labels.py [--root ../shared/data] [--mirrors /work/.mirror] [--out data/photo_type]
"""

from __future__ import annotations

import sys
import argparse
import csv
import hashlib
import io
import json
import random
import re
import subprocess
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402,F401

import numpy as np
from PIL import Image

from carcheck.data.labels import LabelRow, assign_splits, write_label_csv

CLASSES = ("document", "exterior_closeup", "exterior_full", "interior", "no_vehicle", "vin_dashboard")
MAX_SIDE = 1024

#: Fetched repositories: name -> (repo, commit, folder, licence).
FETCHED = {
    "vin_roboflow": ("SultanovAR/show_vallib", "3633284c9e3f3cdd6af386b00515284fe26ce88c",
                     "examples/yolo_example/data", "CC BY 4.0 (Roboflow 'Vin detection' v7)"),
    "trodo": ("Meliodus254/Odometer-Mileage-Reader", "77c9209f116cfc74b08c83bc5cf06f4168ee1d6e",
              "trodo-v01/images", "TRODO: CC BY 4.0 (Mendeley Data); repository code MIT"),
    "sroie": ("zzzDavid/ICDAR-2019-SROIE", "27be4271b251c256f695acbade9a801bffe85994", "data/img",
              "ICDAR 2019 SROIE competition data, research use; repository code MIT"),
    "phone_scan": ("slug183/phone-scan", "175945bcb9fc0888d1901d7ba0b830efb69dc0a3", "dataset",
                   "none stated: research/evaluation use only"),
}
SAMPLE = {"vin_roboflow": 200, "trodo": 200, "sroie": 120, "phone_scan": 120, "stanford_cars": 200,
          "cardd_train": 500, "lensor_train": 300, "lplenka_train": 60, "vds_train": 200}


def _open(data: bytes) -> Image.Image | None:
    """Decoded, EXIF-oriented RGB image, or None for a file that does not decode (skipped, counted)."""
    from PIL import ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        return ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        SKIPPED.append(len(data))
        return None


SKIPPED: list[int] = []


def _save(img: Image.Image, path: Path) -> Path:
    """Write once: an existing file is kept (same content by construction), so a re-run keeps its
    modification time and the feature cache stays valid."""
    if path.is_file():
        return path
    img = img.convert("RGB")
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=92)
    return path


def _git_dir(mirrors: Path, repo: str) -> Path:
    d = mirrors / repo.replace("/", "+") / "repo"
    if not d.exists():
        raise SystemExit(f"{d}: missing. Get it with: git clone https://github.com/{repo} {d} "
                         f"(then the commit named in this script's table)")
    return d


def _extract(mirrors: Path, name: str, keep) -> dict[str, bytes]:
    """Files of one fetched repository's folder at its commit: path -> bytes (``keep(path)`` filters)."""
    repo, commit, folder, _ = FETCHED[name]
    d = _git_dir(mirrors, repo)
    listing = subprocess.run(["git", "-C", str(d), "ls-tree", "-r", commit, "--", folder], check=True,
                             capture_output=True, text=True).stdout
    wanted = []
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        if path.lower().endswith((".jpg", ".jpeg", ".png")) and keep(path):
            wanted.append((meta.split()[2], path))
    # one cat-file process for every blob; blobs the snapshot lists but does not hold answer "missing"
    res = subprocess.run(["git", "-C", str(d), "cat-file", "--batch"], input="".join(f"{sha}\n" for sha, _ in wanted).encode(),
                         check=True, capture_output=True).stdout
    out, pos = {}, 0
    for sha, path in wanted:
        end = res.index(b"\n", pos)
        header = res[pos:end].split()
        pos = end + 1
        if header[-1] == b"missing":
            continue
        size = int(header[2])
        data = res[pos:pos + size]
        pos += size + 1
        if data:
            out[path] = data
    return out


def _sample(items: list, n: int, seed: int = 0) -> list:
    items = sorted(items)
    random.Random(seed).shuffle(items)
    return sorted(items[:n])


def fetched_rows(mirrors: Path, out: Path) -> list[tuple[LabelRow, str]]:
    """(row, declared group key) of the fetched sets, extracted to ``out``."""
    rows = []
    # VIN plates: one file per Roboflow source name (image_1440_jpg.rf.HASH.jpg -> image_1440)
    files = _extract(mirrors, "vin_roboflow", lambda p: "/images/" in p)
    by_src = {}
    for p in sorted(files):
        by_src.setdefault(Path(p).name.split("_jpg.rf.")[0].split(".rf.")[0], p)
    for src in _sample(list(by_src), SAMPLE["vin_roboflow"]):
        p = by_src[src]
        img = _open(files[p])
        if img is None:
            continue
        f = _save(img, out / "vin_roboflow" / f"{src}.jpg")
        rows.append((LabelRow(f, "vin_dashboard", "vin_roboflow"), f"vin:{src}"))
    # TRODO odometers: originals only; photos of one minute (same sender, same car) share a group
    files = _extract(mirrors, "trodo", lambda p: not re.search(r"_(cropped|result)\.", p))
    for p in _sample(list(files), SAMPLE["trodo"]):
        m = re.search(r"PHOTO-(\d{4}-\d\d-\d\d-\d\d-\d\d)", p)
        img = _open(files[p])
        if img is None:
            continue
        f = _save(img, out / "trodo" / Path(p).name)
        rows.append((LabelRow(f, "vin_dashboard", "trodo"), f"trodo:{m.group(1) if m else Path(p).stem}"))
    # SROIE receipts (scans)
    files = _extract(mirrors, "sroie", lambda p: True)
    for p in _sample(list(files), SAMPLE["sroie"]):
        img = _open(files[p])
        if img is None:
            continue
        f = _save(img, out / "sroie" / (Path(p).stem + ".jpg"))
        rows.append((LabelRow(f, "document", "sroie"), f"sroie:{Path(p).stem}"))
    # PHONE-SCAN: <type>_<sub>_<doc>_<capture>.jpg; captures of one document share a group
    files = _extract(mirrors, "phone_scan", lambda p: "/IMA/" in p)
    for p in _sample(list(files), SAMPLE["phone_scan"]):
        stem = Path(p).stem
        img = _open(files[p])
        if img is None:
            continue
        f = _save(img, out / "phone_scan" / (stem + ".jpg"))
        rows.append((LabelRow(f, "document", "phone_scan"), "phonescan:" + "_".join(stem.split("_")[:3])))
    return rows


def _closeup_boxes(anns: list[dict], w: int, h: int, k: int = 2) -> list[tuple[int, int, int, int, int]]:
    """Up to ``k`` close-up crop boxes (x0, y0, x1, y1, category) of one car_parts photo (module doc rule)."""
    if not anns:
        return []
    ux0 = min(a["bbox"][0] for a in anns)
    uy0 = min(a["bbox"][1] for a in anns)
    ux1 = max(a["bbox"][0] + a["bbox"][2] for a in anns)
    uy1 = max(a["bbox"][1] + a["bbox"][3] for a in anns)
    union = max(1.0, (ux1 - ux0) * (uy1 - uy0))
    out, used = [], set()
    for a in sorted(anns, key=lambda a: -a["bbox"][2] * a["bbox"][3]):
        x, y, bw, bh = a["bbox"]
        if min(bw, bh) < 40 or a["category_id"] in used:
            continue
        cx, cy, s = x + bw / 2, y + bh / 2, 1.6
        x0, x1 = max(0, cx - bw * s / 2), min(w, cx + bw * s / 2)
        y0, y1 = max(0, cy - bh * s / 2), min(h, cy + bh * s / 2)
        area = (x1 - x0) * (y1 - y0)
        if area <= 0.30 * w * h and area <= 0.25 * union:
            out.append((int(x0), int(y0), int(x1), int(y1), a["category_id"]))
            used.add(a["category_id"])
        if len(out) == k:
            break
    return out


def shared_rows(root: Path, out: Path) -> list[tuple[LabelRow, str]]:
    rows = []
    cp = root / "car_parts"
    for part, split in (("trainingset", None), ("testset", "test")):
        coco = json.loads((cp / part / "annotations.json").read_text())
        anns = defaultdict(list)
        for a in coco["annotations"]:
            if a["category_id"] != 1:  # _background_
                anns[a["image_id"]].append(a)
        for im in coco["images"]:
            p = cp / part / "JPEGImages" / im["file_name"]
            if not p.is_file():
                continue
            g = f"car_parts:{part}/{im['file_name']}"
            rows.append((LabelRow(p, "exterior_full", "car_parts", split), g))
            img = None
            for i, (x0, y0, x1, y1, c) in enumerate(_closeup_boxes(anns[im["id"]], im["width"], im["height"])):
                img = img or Image.open(p).convert("RGB")
                f = _save(img.crop((x0, y0, x1, y1)), out / "car_parts_closeup" / f"{part}_{p.stem}_{i}.jpg")
                rows.append((LabelRow(f, "exterior_closeup", "car_parts_closeup", split), g))
    stanford = [p for d in sorted((root / "car_models" / "stanford_cars_subset32").iterdir()) if d.is_dir()
                for p in sorted(d.glob("*.jpg"))]
    for p in _sample(stanford, SAMPLE["stanford_cars"]):
        rows.append((LabelRow(p, "exterior_full", "stanford_cars"), f"stanford:{p.name}"))
    base = root / "car_part_crops" / "compcars_style_interior_voc"
    rng = random.Random(0)
    for p in sorted((base / "images").glob("*.jpg")):
        g = f"compcars:images/{p.name}"
        rows.append((LabelRow(p, "interior", "compcars_interior"), g))
        img = Image.open(p).convert("RGB")
        w, h = img.size
        for i in range(2):
            fw, fh = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6)
            x0, y0 = rng.uniform(0, 1 - fw) * w, rng.uniform(0, 1 - fh) * h
            f = _save(img.crop((int(x0), int(y0), int(x0 + fw * w), int(y0 + fh * h))),
                      out / "compcars_interior_crop" / f"{p.stem}_{i}.jpg")
            rows.append((LabelRow(f, "interior", "compcars_interior_crop"), g))
    with open(base / "crops.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            label = "vin_dashboard" if r["part_class"] == "dashboard" else "interior"
            rows.append((LabelRow(base / r["crop"], label, f"compcars_{r['part_class']}_crop"),
                         f"compcars:{r['source_image']}"))
    coco = root / "vehicle_presence" / "coco128"
    with open(coco / "labels.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["has_vehicle"] == "0":
                rows.append((LabelRow(coco / "images" / r["file"], "no_vehicle", "coco128"), f"coco:{r['file']}"))
    return rows


def _dhash_bits(path: Path) -> tuple[int, int]:
    """64-bit dHash of the image and of its mirror image."""
    import imagehash

    img = Image.open(path).convert("L")
    h = imagehash.dhash(img)
    m = imagehash.dhash(img.transpose(Image.FLIP_LEFT_RIGHT))
    return int(str(h), 16), int(str(m), 16)


def group_rows(items: list[tuple[LabelRow, str]], max_bits: int = 6) -> tuple[list[LabelRow], int]:
    """Rows with ``group`` set: declared keys joined with near-duplicates (union-find). Derived crops
    inherit their photo's key and are not hashed. Returns the rows and the number of near-duplicate joins."""
    parent = list(range(len(items)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first = {}
    for i, (_, key) in enumerate(items):
        union(i, first.setdefault(key, i))
    hashed = [i for i, (r, _) in enumerate(items) if not r.source.endswith(("_closeup", "_interior_crop"))]
    hs = np.array([_dhash_bits(items[i][0].path) for i in hashed], dtype=np.uint64)
    joins = 0
    plain, mirror = hs[:, 0], hs[:, 1]
    for a in range(len(hashed)):
        x = plain[a] ^ plain[a + 1:]
        y = plain[a] ^ mirror[a + 1:]
        d = np.minimum(np.bitwise_count(x), np.bitwise_count(y))
        for b in np.nonzero(d <= max_bits)[0]:
            i, j = hashed[a], hashed[a + 1 + int(b)]
            if find(i) != find(j):
                joins += 1
            union(i, j)
    rows = []
    for i, (r, _) in enumerate(items):
        rows.append(replace(r, group=items[find(i)][1]))
    return rows, joins


def damaged_rows(root: Path, cardd: Path, cache_dir: Path) -> list[tuple[LabelRow, str]]:
    """Damaged exterior photos (issue 26): the *training* splits of CarDD, lensor, lplenka and VDS, so the
    head learns that a dent close-up is an exterior photo (the shipped head, trained without damaged cars,
    typed 4.8% of CarDD valid as confidently non-exterior: bench/studies/photo_type_gate.py). Their held-out
    splits stay out (they are the gate study's test sets). None of these sets says full view or close-up, so
    the two exterior types are pseudo-labelled by the shipped head (whichever of its two exterior
    probabilities is higher); the decision that matters (exterior or not) is the sets' own."""
    import torch

    from carcheck.data.recipes import build_recipe
    from carcheck.models.classifier import WEIGHTS_DIR, load_head
    from carcheck.models.features import FeatureCache

    suffixes = (".jpg", ".jpeg", ".png")
    sources = {
        "cardd_train": sorted(p for p in (cardd / "train" / "images").glob("*") if p.suffix.lower() in suffixes),
        "lensor_train": sorted((root / "car_damage" / "lensor_severity" / "images" / "train").glob("*.jpg")),
        "lplenka_train": sorted((root / "car_damage" / "coco_car_damage_lplenka" / "train").glob("*.jpg")),
        "vds_train": [r.path for r in build_recipe("severity", root) if r.split == "train"],
    }
    picked = [(name, p) for name, paths in sources.items() for p in _sample(paths, SAMPLE[name])]
    if not picked:
        return []
    head, info = load_head(WEIGHTS_DIR / "classifier_photo_type_lite0.safetensors")
    feats, ok, _ = FeatureCache(cache_dir).get_many([p for _, p in picked], ("full",))
    with torch.no_grad():
        prob = torch.softmax(head.head(feats[:, 0]).float(), -1)
    full, close = info.classes.index("exterior_full"), info.classes.index("exterior_closeup")
    rows = []
    for i, pr in zip(ok, prob):
        name, p = picked[i]
        label = "exterior_full" if pr[full] >= pr[close] else "exterior_closeup"
        # their own split, so the rows of the earlier recipe keep theirs: 85% train, 15% val (no test:
        # the sets' held-out splits are the test), by a hash of the file name
        split = "val" if int(hashlib.sha256(p.name.encode()).hexdigest(), 16) % 100 < 15 else "train"
        rows.append((LabelRow(p, label, f"damaged_{name}", split), f"{name}:{p.name}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DATA)
    ap.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "photo_type")
    ap.add_argument("--cardd", type=Path, default=ROOT / "data" / "cardd", help="built CarDD (train/images)")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "feature_cache")
    ap.add_argument("--no-damaged", action="store_true", help="leave the damaged exterior photos out (the "
                    "recipe of the head shipped before issue 26)")
    args = ap.parse_args()
    items = shared_rows(args.root, args.out) + fetched_rows(args.mirrors, args.out)
    if not args.no_damaged:
        items += damaged_rows(args.root, args.cardd, args.cache)
    rows, joins = group_rows(items)
    # a group holding a car_parts test photo is test as a whole
    test_groups = {r.group for r in rows if r.split == "test"}
    rows = [replace(r, split="test") if r.group in test_groups else r for r in rows]
    rows = assign_splits(rows, strata=("label",))
    csv_path = write_label_csv(rows, args.out / "labels.csv")
    counts = defaultdict(int)
    for r in rows:
        counts[f"{r.label}/{r.split}"] += 1
    manifest = {"classes": CLASSES, "counts": dict(sorted(counts.items())), "near_duplicate_joins": joins, "undecodable_skipped": len(SKIPPED),
                "fetched": {k: {"repo": v[0], "commit": v[1], "folder": v[2], "licence": v[3], "sampled": SAMPLE[k]}
                            for k, v in FETCHED.items()}}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(csv_path, json.dumps(manifest["counts"], indent=1), "near-duplicate joins:", joins)


if __name__ == "__main__":
    main()
