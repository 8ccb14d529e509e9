"""Issue 27 item 4 / item 3: should the report split a damage component where it narrows (two touching dents)?

The report's instances are the damage map's connected components (``carcheck.pipeline.instances``), which merge
two dents that touch. :func:`carcheck.pipeline.instances.split_at_necks` splits a component whose thick parts
(distance from its edge >= ``core_fraction`` x its largest) are separate, each pixel to the nearest one. Scored here
the way CarDD scores instances (COCO mask / box AP, CarDD's area cuts, per class) on CarDD **valid**, for the plain
components and several ``core_fraction`` values, from the cached damage logits of the shipped damage network
(``runs/instance_head/cache``, written by ``python -m carcheck.train.instances cache data/cardd valid
runs/instance_head/cache --logits``; the same cache ``bench/studies/instance_head.py`` reads), so no photo is run
through the network again. The split is adopted only where it is not worse than the components on valid.

Run: python bench/studies/instance_split.py [--limit N]   (writes bench/results/instance_split_valid.json)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/studies/: the cache reader
from _common import RESULTS, ROOT, time_stats, timed_each, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from carcheck.evaluate.segmentation import coco_instance_ap, components_as_detections, encode_mask  # noqa: E402
from carcheck.pipeline.instances import split_at_necks  # noqa: E402
from instance_head import load_valid  # noqa: E402

#: (core_fraction, classes split: "all" or a tuple of class names); (None, "all") = the plain components
VARIANTS = ((None, "all"), (0.5, "all"), (0.6, "all"), (0.7, "all"), (0.5, ("dent",)), (0.6, ("dent",)), (0.7, ("dent",)))
MIN_AREA = 16  # px at 640 x 640, as components_as_detections


def instances(probs: np.ndarray, core_fraction: float | None, only: str | tuple[str, ...] = "all",
              names: tuple[str, ...] = ()) -> list[tuple[int, np.ndarray, float]]:
    """``[(class, mask, score)]``: the damage map's components (:func:`components_as_detections`, >= MIN_AREA px),
    each of a class in ``only`` (``"all"``, or class names; ``names`` the classes without background) split at its
    necks (``core_fraction`` None: not split); score = mean class probability over the piece."""
    out = []
    for c, comp, score in components_as_detections(probs, MIN_AREA):
        split = core_fraction if only == "all" or names[c - 1] in only else None
        pieces = split_at_necks(comp, split, MIN_AREA)
        out += [(c, comp, score)] if len(pieces) == 1 else [(c, p, float(probs[c][p].mean())) for p in pieces]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "instance_head" / "cache")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "instance_split_valid.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if not (args.cache / "valid.json").is_file():
        sys.exit(f"no cache at {args.cache}: see the module doc")
    x, lg, gt, n, tax = load_valid(args.cache, args.limit)
    sizes = {i: (640, 640) for i in range(n)}
    dets = {v: [] for v in VARIANTS}
    secs = {v: [] for v in VARIANTS}
    counts = {v: 0 for v in VARIANTS}
    names = tuple(tax.classes)
    for i in range(n):
        logits = torch.from_numpy(lg[i].astype(np.float32))[None]
        probs = F.interpolate(logits, size=(640, 640), mode="bilinear", align_corners=False)[0].softmax(0).numpy()
        for f in VARIANTS:
            (found,), ts = timed_each(lambda p: instances(p, f[0], f[1], names), [probs])
            secs[f] += ts
            counts[f] += len(found)
            dets[f] += [(i, c, encode_mask(m), s) for c, m, s in found]
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{n}", flush=True)
    rows = {}
    print(f"{'instances':32} {'count':>6} {'mask AP':>8} {'box AP':>7} {'AP_S':>6} {'dent':>6} {'scratch':>7} "
          f"{'crack':>6} {'ms':>6}")
    for f in VARIANTS:
        r = coco_instance_ap(gt, dets[f], tax.classes, sizes)
        key = "components" if f[0] is None else f"split {f[1] if f[1] == 'all' else '+'.join(f[1])} core_fraction={f[0]}"
        rows[key] = {"instances": counts[f], "segm": r["segm"], "bbox": r["bbox"],
                     "ms_per_photo_median": round(1000 * time_stats(secs[f])["median_s"], 2)}
        print(f"{key:32} {counts[f]:>6} {r['segm']['AP']:>8.4f} {r['bbox']['AP']:>7.4f} {r['segm']['AP_S']:>6.3f} "
              f"{r['segm']['AP_dent']:>6.3f} {r['segm']['AP_scratch']:>7.3f} {r['segm']['AP_crack']:>6.3f} "
              f"{rows[key]['ms_per_photo_median']:>6}")
    base = rows["components"]["segm"]["AP"]
    ok = {k: v["segm"]["AP"] for k, v in rows.items() if k != "components" and v["segm"]["AP"] >= base}
    chosen = max(ok, key=ok.get) if ok else "components"
    print(f"chosen on valid (highest mask AP, not below the components' {base:.4f}): {chosen}")
    write_results(args.out, {"split": "CarDD valid", "images": n, "cache": str(args.cache), "rows": rows,
                             "chosen": chosen}, command=" ".join(["python", *sys.argv]))
    print("written", args.out)


if __name__ == "__main__":
    main()
