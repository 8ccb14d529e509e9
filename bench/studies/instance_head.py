"""Issue 27 item 1: the instance head's decoding settings, chosen on CarDD valid, and what it costs.

Reads the valid cache of ``python -m carcheck.train.instances cache data/cardd valid runs/instance_head/cache
--logits`` (the frozen damage network's head input and damage logits of the 793 valid photos at 640 px), so no
photo is run through the network again. For each setting: COCO mask / box AP (CarDD's area cuts,
:func:`carcheck.evaluate.segmentation.coco_instance_ap`) of the head's instances, beside the damage map's connected
components (``--instances-from components``) from the same logits.

Settings (the head file's ``decode`` metadata; :func:`carcheck.models.instances.masks_in_boxes`):
``min_cover`` (0, 0.2, 0.5: how much of a component must lie in a box to count as under it), ``empty`` (a box
without its class's pixels: drop it or use the filled box), ``score`` (the peak, or the peak times the mean
probability of the class over the mask), ``threshold`` (lowest peak kept), ``exclusive`` (a pixel in two boxes of one class goes to the nearer centre); and the other use of the same head,
``mode=grouping`` (:func:`carcheck.models.instances.group_by_centres`: the damage map's components, split among
the head's centres where two or more peaks >= ``min_peak`` lie in one).
Chosen: the highest valid mask AP (a greedy search: cover x empty, then exclusive, then score x threshold).

Cost (2 threads, the assessment's 384 x 512 input and CarDD's 640 x 640, median of 20 after 3): ms the head adds
per photo (its input pooling, convolutions, peak decoding and masks) beside the components' ms.

Run: python bench/studies/instance_head.py --head runs/instance_head/RUN/best.safetensors [--limit N]
Writes bench/results/instance_head_valid.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from _common import RESULTS, ROOT, timed_each, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from carcheck.data.coco_dataset import CocoSegmentationDataset  # noqa: E402
from carcheck.data.taxonomy import IGNORE, get_taxonomy  # noqa: E402
from carcheck.data.yolo import annotation_file  # noqa: E402
from carcheck.evaluate.segmentation import coco_instance_ap, components_as_detections, encode_mask  # noqa: E402
from carcheck.models.instances import (decode_centers, group_by_centres, head_input, load_instance_head,  # noqa: E402
                                       masks_in_boxes)


def load_valid(cache: Path, limit: int | None):
    import json

    meta = json.loads((cache / "valid.json").read_text())
    n = meta["n"]
    x = np.memmap(cache / "valid_x.f16", np.float16, "r", shape=(n, 103, 80, 80))
    lg = np.memmap(cache / "valid_logits.f16", np.float16, "r", shape=(n, 7, 160, 160))
    ds = CocoSegmentationDataset([str(annotation_file(str(ROOT / "data" / "cardd") + "@valid", "valid"))], "cardd_damage")
    tax = get_taxonomy("cardd_damage")
    assert [str(p) for p in ds.image_paths()[:n]] == meta["paths"], "cache order differs from the dataset's"
    m = min(n, limit or n)
    gt = []
    for i in range(m):
        src, im = ds._items[i]
        objs = []
        for inst in src.instances(im.id):
            c = ds.category_map.get(inst.category)
            if c is not None and c != IGNORE:
                objs.append((tax.index(c) + 1, inst.to_mask(640, 640)))
        gt.append((i, objs))
    return x, lg, gt, m, tax


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "instance_head" / "cache")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "instance_head_valid.json")
    ap.add_argument("--write-head", type=Path, default=None,
                    help="also write the head with the chosen settings as its decode metadata (the shipped file: "
                         "src/carcheck/models/weights/instance_head_cardd_lite0.safetensors)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    x, lg, gt, n, tax = load_valid(args.cache, args.limit)
    hi = load_instance_head(args.head)
    sizes = {i: (640, 640) for i in range(n)}
    comp_dets, per_image = [], []
    for i in range(n):
        logits = torch.from_numpy(lg[i].astype(np.float32))[None]
        probs = F.interpolate(logits, size=(640, 640), mode="bilinear", align_corners=False)[0].softmax(0).numpy()
        label = probs.argmax(0)
        comp_dets += [(i, c, encode_mask(m), s) for c, m, s in components_as_detections(probs)]
        with torch.inference_mode():
            out = hi.head(torch.from_numpy(x[i].astype(np.float32))[None])
        boxes = decode_centers(out, k=100, threshold=0.01)
        per_image.append((label, probs, boxes))
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{n}", flush=True)
    res = {"images": n, "head": str(args.head), "components": coco_instance_ap(gt, comp_dets, tax.classes, sizes)}
    print(f"components: mask AP {res['components']['segm']['AP']:.4f} box AP {res['components']['bbox']['AP']:.4f}")

    def head_ap(min_cover, empty, score, threshold, exclusive=True):
        dets = []
        for i, (label, probs, boxes) in enumerate(per_image):
            for c, m, s, box in masks_in_boxes(label, [b for b in boxes if b[1] >= threshold], min_cover, empty,
                                               exclusive=exclusive, probs=probs, score=score):
                dets.append((i, c, encode_mask(m), s, box))
        return coco_instance_ap(gt, dets, tax.classes, sizes)

    grid = {}

    def group_ap(min_peak):
        dets = []
        for i, (label, probs, boxes) in enumerate(per_image):
            dets += [(i, c, encode_mask(m), s, box) for c, m, s, box in group_by_centres(label, probs, boxes, min_peak)]
        return coco_instance_ap(gt, dets, tax.classes, sizes)

    def run(mc, em, sc, th, ex):
        mc, th, ex = float(mc), float(th), ex in (True, "True")
        key = f"min_cover={mc} empty={em} score={sc} threshold={th} exclusive={ex}"
        if key not in grid:
            grid[key] = r = head_ap(mc, em, sc, th, ex)
            print(f"{key}: mask AP {r['segm']['AP']:.4f} box AP {r['bbox']['AP']:.4f}", flush=True)

    def best():
        k = max(grid, key=lambda k: grid[k]["segm"]["AP"])
        return {kv.split("=")[0]: kv.split("=")[1] for kv in k.split()}, k

    for mc, em in itertools.product((0.0, 0.2, 0.5), ("drop", "box")):
        run(mc, em, "peak", 0.05, True)
    b, _ = best()
    run(b["min_cover"], b["empty"], "peak", 0.05, False)
    b, _ = best()
    for sc, th in itertools.product(("peak", "peak_x_mean"), (0.01, 0.05, 0.1)):
        run(b["min_cover"], b["empty"], sc, th, b["exclusive"])
    b, _ = best()
    for mc, em in itertools.product((0.0, 0.2, 0.5), ("drop", "box")):  # cover x empty again at the best exclusive
        run(mc, em, b["score"], b["threshold"], b["exclusive"])
    for mp in (0.1, 0.2, 0.3):
        key = f"mode=grouping min_peak={mp}"
        grid[key] = r = group_ap(mp)
        print(f"{key}: mask AP {r['segm']['AP']:.4f} box AP {r['bbox']['AP']:.4f}", flush=True)
    _, best_key = best()
    res["grid"] = grid
    res["chosen"] = {"mode": "boxes", **{kv.split("=")[0]: kv.split("=")[1] for kv in best_key.split()}}
    res["chosen_ap"] = grid[best_key]
    print(f"chosen on valid: {best_key}: mask AP {grid[best_key]['segm']['AP']:.4f}")
    ch = res["chosen"]
    if ch["mode"] == "grouping":
        decode = {"k": 100, "threshold": 0.01, "mode": "grouping", "min_peak": float(ch["min_peak"])}
    else:
        decode = {"k": 100, "threshold": float(ch["threshold"]), "min_cover": float(ch["min_cover"]),
                  "empty": ch["empty"], "exclusive": ch["exclusive"] == "True", "score": ch["score"], "mode": "boxes"}
    for k, v in decode.items():
        setattr(hi, k, v)
    res["cost_ms"] = cost(hi, x, lg, per_image, n=min(20, len(per_image)))
    print("cost ms:", res["cost_ms"])
    write_results(args.out, res, indent=2)
    if args.write_head is not None:
        from safetensors import safe_open

        from carcheck.models.instances import save_instance_head

        with safe_open(str(args.head), framework="pt") as f:
            meta = {k: v for k, v in (f.metadata() or {}).items()
                    if k not in ("kind", "in_channels", "classes", "width", "dilations", "stride", "decoder_of")}
        save_instance_head(hi.head, args.write_head, {**meta, "decode": decode, "chosen_on": "CarDD valid (793 photos), "
                                                      f"mask AP {res['chosen_ap']['segm']['AP']}"})
        print(f"wrote {args.write_head} with decode {decode}")


def cost(hi, x, lg, per_image, n: int = 20) -> dict:
    """ms per photo (median over ``n`` valid photos at 640 x 640, 2 threads, after 3 warm-up calls) of the head's
    steps from the decoder's output on (pooling, convolutions, peak decoding, masks with the chosen settings) and of
    the components from the same damage map; plus the head's convolutions alone at the assessment's 384 x 512."""
    def med(fn):
        return 1000 * float(np.median(timed_each(fn, range(n), warmup=3)[1]))

    ys = [torch.randn(1, 96, 160, 160) for _ in range(n)]

    def head(i):
        with torch.inference_mode():
            hx = head_input(ys[i], torch.from_numpy(lg[i].astype(np.float32))[None])
        hx = torch.from_numpy(x[i].astype(np.float32))[None]  # the real input (the pooling above is only timed)
        hi(hx, per_image[i][0], (640, 640), per_image[i][1])

    CONV_SHAPE = (1, 103, 48, 64)
    xr = torch.randn(*CONV_SHAPE)

    def conv_only(i):
        with torch.inference_mode():
            hi.head(xr)

    return {"head_ms_640": med(head), "components_ms_640": med(lambda i: components_as_detections(per_image[i][1])),
            "head_convs_ms_384x512": med(conv_only), "photos": n, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    main()
