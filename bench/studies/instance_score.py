"""Issue 27: how the damage map's instances are scored, chosen on CarDD valid by COCO mask AP.

COCO AP ranks every instance of the split by its score; the components have been scored by their mean class
probability, so a 20-pixel fragment at 0.7 outranks a whole dent at 0.6. Scored here (same instances, the damage
map's 8-connected components with dents split at their necks as the report makes them, from the cached valid
logits of ``runs/instance_head/cache``, as ``bench/studies/instance_split.py``):

- ``mean``: mean class probability over the instance (today);
- ``max``: its highest probability;
- ``mean_x_size``: mean x (1 - exp(-area / A0)), A0 in px at 640 x 640 (small fragments ranked down);
- ``mean_x_margin``: mean of (class probability - the highest other class's) over the instance.

Run: python bench/studies/instance_score.py [--limit N]   (writes bench/results/instance_score_valid.json)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/studies/: the cache reader
from _common import RESULTS, ROOT, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from carcheck.evaluate.segmentation import coco_instance_ap, encode_mask  # noqa: E402
from carcheck.schema import FusionConfig  # noqa: E402
from instance_head import load_valid  # noqa: E402
from instance_split import instances  # noqa: E402

A0 = (100, 400, 1600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "instance_head" / "cache")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "instance_score_valid.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if not (args.cache / "valid.json").is_file():
        sys.exit(f"no cache at {args.cache}: see bench/studies/instance_split.py")
    x, lg, gt, n, tax = load_valid(args.cache, args.limit)
    fc = FusionConfig()
    names = list(tax.classes)
    sizes = {i: (640, 640) for i in range(n)}
    found = []  # (image, class, rle, mean, max, area, margin)
    for i in range(n):
        logits = torch.from_numpy(lg[i].astype(np.float32))[None]
        probs = F.interpolate(logits, size=(640, 640), mode="bilinear", align_corners=False)[0].softmax(0).numpy()
        top2 = np.sort(probs, 0)[-2]  # the second-highest class probability per pixel
        for c, piece, _ in instances(probs, fc.instance_split_core_fraction, fc.instance_split_types, names):
            p = probs[c][piece]
            found.append((i, c, encode_mask(piece), float(p.mean()), float(p.max()), int(piece.sum()),
                          float((p - top2[piece]).mean())))
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{n}", flush=True)
    scores = {"mean": lambda f: f[3], "max": lambda f: f[4], "mean_x_margin": lambda f: f[6]}
    for a0 in A0:
        scores[f"mean_x_size A0={a0}"] = lambda f, a0=a0: f[3] * (1 - np.exp(-f[5] / a0))
    rows = {}
    print(f"{'score':22} {'mask AP':>8} {'box AP':>7} {'AP50':>6} {'AP_S':>6} {'dent':>6} {'scratch':>7} {'crack':>6}")
    for name, fn in scores.items():
        r = coco_instance_ap(gt, [(f[0], f[1], f[2], float(fn(f))) for f in found], tax.classes, sizes)
        rows[name] = {"segm": r["segm"], "bbox": r["bbox"]}
        s = r["segm"]
        print(f"{name:22} {s['AP']:>8.4f} {r['bbox']['AP']:>7.4f} {s['AP50']:>6.3f} {s['AP_S']:>6.3f} "
              f"{s['AP_dent']:>6.3f} {s['AP_scratch']:>7.3f} {s['AP_crack']:>6.3f}")
    chosen = max(rows, key=lambda k: rows[k]["segm"]["AP"])
    print(f"highest valid mask AP: {chosen}")
    write_results(args.out, {"split": "CarDD valid", "images": n, "instances": len(found), "rows": rows,
                             "chosen": chosen}, command=" ".join(["python", *sys.argv]))
    print("written", args.out)


if __name__ == "__main__":
    main()
