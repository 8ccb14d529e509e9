"""What the door-anchored ends and the finer second look (issue 26, session 15) cost per photo.

The models run once per photo (``Assessor.predict``, untimed). Timed, 2 threads: ``door_anchored_ends`` on the
photo's argmax part map at network resolution (every photo pays it), and ``Assessor.damage_map_at`` at the second
look's 1024 px (``fusion.missed_damage_longest_side``; only photos the second look runs on pay it: the first look
finds no damage on an exterior photo and the damage filter gives P(damaged) >= 0.9). Counted: on how many of the
photos the second look runs. Photos: every exterior-or-searched photo of the dev cases, the demo case and, where built,
the extra damaged cases (bench/cases_extra).

Run: python bench/speed/second_look_step.py   (about 3 minutes; writes bench/results/second_look_step.json)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, time_stats, timed_each, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

SUFFIXES = (".jpg", ".jpeg", ".png")


def photos() -> list[Path]:
    out = []
    for root in (ROOT / "data" / "cases_dev", DATA / "cases", ROOT / "data" / "cases_extra"):
        out += sorted(p for p in root.glob("*/*") if p.suffix.lower() in SUFFIXES)
    return out


def _ms(seconds: list[float]) -> dict:
    st = time_stats(seconds)
    return {"median": round(st["median_s"] * 1000, 2), "p95": round(st["p95_s"] * 1000, 2), "runs": st["runs"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "second_look_step.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from carcheck.data.images import load_image
    from carcheck.models.runtime import cpu_info
    from carcheck.pipeline.assess import Assessor
    from carcheck.pipeline.part_ends import door_anchored_ends
    from carcheck.pipeline.photo import photo_regions
    from carcheck.pipeline.photo_type import EXTERIOR_TYPES

    a = Assessor()
    fc = a.config.fusion
    names = ["background", *a.part_names]
    labels, triggered = [], []
    files = photos()
    for f in files:
        img = load_image(f)
        pred = a.predict(img)
        ptype = a._photo_type(pred.heads)
        if pred.parts is None or (ptype is not None and not ptype.search_exterior_damage):
            continue
        labels.append(pred.parts.argmax(0).astype(np.uint8))
        exterior = ptype is None or ptype.type in EXTERIOR_TYPES
        p = a.heads.probability(pred.heads, "damaged", "damaged") if exterior else None
        _, _, regions = photo_regions(pred.parts, pred.damage, a.part_names, a.damage_names, fc, a.plausibility)
        if not regions and p is not None and p >= fc.missed_damage_filter_at_least:
            triggered.append((img, pred.parts.shape[1:]))
    _, door_s = timed_each(lambda lab: door_anchored_ends(lab, names, fc.door_end_min_share, fc.door_end_max_distance),
                           labels, warmup=3)
    _, fine_s = timed_each(lambda t: a.damage_map_at(t[0], fc.missed_damage_longest_side, t[1]), triggered, warmup=1)
    res = {"photos_read": len(files), "photos_searched": len(labels), "second_look_runs_on": len(triggered),
           "door_anchored_ends_ms": _ms(door_s), "finer_pass_ms": _ms(fine_s) if fine_s else None,
           "finer_pass_ms_per_searched_photo": round(sum(fine_s) * 1000 / max(1, len(labels)), 2),
           "longest_side": fc.missed_damage_longest_side, "cpu": cpu_info()}
    write_results(args.out, res, indent=2)
    print(f"{len(labels)} searched photos of {len(files)}; the second look runs on {len(triggered)}")
    print(f"door-anchored ends: median {res['door_anchored_ends_ms']['median']} ms, p95 "
          f"{res['door_anchored_ends_ms']['p95']} ms per photo (network resolution)")
    if fine_s:
        print(f"finer pass at {fc.missed_damage_longest_side} px: median {res['finer_pass_ms']['median']} ms, p95 "
              f"{res['finer_pass_ms']['p95']} ms per photo it runs on; "
              f"{res['finer_pass_ms_per_searched_photo']} ms per searched photo on average -> {args.out}")


if __name__ == "__main__":
    main()
