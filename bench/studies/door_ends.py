"""Door-anchored ends on the part map (carcheck.pipeline.part_ends.door_anchored_ends), measured.

Each front-end region whose nearest door is mostly a back door becomes the rear counterparts (and the
reverse): on wrecks the crushed end is read as the wrong end while the doors beside it are read well
(issue 26 item 5: the Panamera's torn tailgate read as "hood", the Corvette's nose as "trunk"). This
script checks the rule does no harm on intact cars: the shipped part model's maps on DSMLR
car_parts photos (at 512 px, as the assessment runs it) are scored raw, with the shipped one-end rule
(end_dominance 10), with the door rule alone and with the door rule before the one-end rule, for a small
grid of the rule's two numbers (back-door share of the vehicle's pixels, voting radius). The numbers are
chosen on car_parts/trainingset (largest mIoU of door + one-end; the part model trained on these photos,
but neither number is learned by it) and reported on car_parts/testset (85 photos) with the paired
bootstrap 95% CI of the mIoU difference against the shipped rule, beside the pixels of one end labelled
as the other ("end swaps": ground-truth front-part pixels predicted as a rear part and the reverse).

Run: python bench/studies/door_ends.py   (about 2 minutes on 2 cores; writes bench/results/door_ends.json)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "calibration"))
from _common import DATA, RESULTS, ROOT, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHARES = (0.01, 0.02, 0.05)
RADII = (0.2, 0.35, 0.5)
SHIPPED_K = 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "door_ends.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    from part_ends import predict  # bench/calibration/part_ends.py: the shipped part model's maps at 512 px

    from carcheck.data.taxonomy import get_taxonomy
    from carcheck.evaluate.metrics import bootstrap_miou_difference, confusion_matrix, miou
    from carcheck.models.inference import load_segmenter
    from carcheck.models.runtime import cpu_info, use_bf16
    from carcheck.pipeline.part_ends import FRONT_REAR_PAIRS, consistent_ends, door_anchored_ends

    t0 = time.time()
    names = ["background", *get_taxonomy("dsmlr_parts").classes]
    n = len(names)
    idx = {c: i for i, c in enumerate(names)}
    front = [idx[f] for f, _ in FRONT_REAR_PAIRS]
    rear = [idx[r] for _, r in FRONT_REAR_PAIRS] + [idx["tailgate"]]
    model = load_segmenter(ROOT / "src" / "carcheck" / "models" / "weights" / "segmenter_parts_lite0.safetensors")
    bf16 = use_bf16("auto")
    root = DATA / "car_parts"
    sets = {s: predict(model, root / s / "annotations.json", bf16) for s in ("trainingset", "testset")}

    def rules(share, radius):
        return {"raw": lambda p: p,
                "one_end (shipped)": lambda p: consistent_ends(p, names, SHIPPED_K),
                "door": lambda p: door_anchored_ends(p, names, share, radius),
                "door + one_end": lambda p: consistent_ends(door_anchored_ends(p, names, share, radius), names,
                                                            SHIPPED_K)}

    def score(pairs, fn):
        cms, swaps = [], 0
        for p, g in pairs:
            q = fn(p)
            cms.append(confusion_matrix(q, g, n))
            valid = g != 255
            swaps += int((np.isin(g, front) & np.isin(q, rear) & valid).sum()
                         + (np.isin(g, rear) & np.isin(q, front) & valid).sum())
        cms = np.stack(cms)
        return cms, {"miou": round(miou(cms.sum(0)), 4), "end_swap_pixels": swaps}

    grid = {}
    for share in SHARES:
        for radius in RADII:
            _, s = score(sets["trainingset"], rules(share, radius)["door + one_end"])
            grid[f"{share}/{radius}"] = s
    best = max(grid, key=lambda k: (grid[k]["miou"], -grid[k]["end_swap_pixels"]))
    share, radius = (float(x) for x in best.split("/"))
    rows, cms = {}, {}
    for set_name, pairs in sets.items():
        rows[set_name] = {}
        for name, fn in rules(share, radius).items():
            cms[set_name, name], rows[set_name][name] = score(pairs, fn)
    boot = bootstrap_miou_difference(cms["testset", "door + one_end"], cms["testset", "one_end (shipped)"], 5000)
    res = {"what": "door-anchored ends (pipeline/part_ends.py) on the shipped part model's maps, DSMLR car_parts",
           "chosen": {"min_door_share": share, "max_distance": radius,
                      "rule": "largest mIoU of door + one_end on car_parts/trainingset"},
           "grid_trainingset": grid, "sets": rows,
           "testset_vs_shipped": {"diff": round(boot["diff"], 4), "ci95": [round(x, 4) for x in boot["ci95"]],
                                  "replicates": boot["replicates"]},
           "cpu": cpu_info(), "wall_s": round(time.time() - t0, 1)}
    write_results(args.out, res, indent=2)
    print(f"grid on trainingset (share/radius: mIoU, end-swap pixels): "
          + ", ".join(f"{k}: {v['miou']:.4f}/{v['end_swap_pixels']}" for k, v in grid.items()))
    print(f"chosen min_door_share {share}, max_distance {radius}")
    print(f"{'rule':<22}" + "".join(f"{s + ' mIoU':>18}{'end swaps':>12}" for s in sets))
    for name in rows["testset"]:
        print(f"{name:<22}" + "".join(f"{rows[s][name]['miou']:>18.4f}{rows[s][name]['end_swap_pixels']:>12}"
                                      for s in sets))
    b = res["testset_vs_shipped"]
    print(f"testset door + one_end minus shipped: {b['diff']:+.4f} mIoU, 95% CI [{b['ci95'][0]:+.4f}, "
          f"{b['ci95'][1]:+.4f}] -> {args.out}")


if __name__ == "__main__":
    main()
