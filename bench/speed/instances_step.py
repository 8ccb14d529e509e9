"""What the report's damage instances (issue 27 item 3, ``carcheck.pipeline.instances``) cost per photo.

The models run once per photo (``Assessor.predict``, untimed); then, on the same softmax maps, three steps are timed
in two rounds: the fusion alone (``photo_regions``), ``photo_detections`` as shipped (the fusion, the detections' report
entries with their cm, and the instances) and ``photo_instances`` alone on the fusion's output (components, their
parts, outlines, cm): that last column is what the instances add. Photos: CarDD test (close-ups with damage; the first 60) and the dev
cases' exterior photos (whole cars; the first 60), 2 threads. Issue 27's budget: the instance step adds <= 15 ms per
photo.

Run: python bench/speed/instances_step.py   (about two minutes; writes bench/results/instances_step.json)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import ROOT, time_stats, timed_each, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def photos(n: int) -> dict[str, list[Path]]:
    cardd = sorted((ROOT / "data" / "cardd" / "test" / "images").glob("*.jpg"))[:n]
    dev_dir = ROOT / "data" / "cases_dev"
    dev = sorted(p for p in dev_dir.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: 3 * n]
    return {"cardd_test": cardd, "dev_cases": dev}


def _ms(seconds: list[float]) -> dict:
    st = time_stats(seconds)
    return {"median": round(st["median_s"] * 1000, 2), "p95": round(st["p95_s"] * 1000, 2), "runs": st["runs"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="photos per set")
    ap.add_argument("--out", default="instances_step.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from carcheck.data.images import load_image
    from carcheck.models.runtime import cpu_info
    from carcheck.pipeline.assess import Assessor
    from carcheck.pipeline.photo import photo_detections, photo_regions

    a = Assessor()
    cfg = a.config
    rows = {}
    for name, files in photos(args.n).items():
        maps = []
        for f in files:
            img = load_image(f)
            pred = a.predict(img)
            if pred.damage is not None and pred.parts is not None:
                maps.append((f.name, pred.parts, pred.damage, img.shape[1], img.shape[0]))
            if len(maps) >= args.n:
                break

        def before(m):
            n, parts, dmg, w, h = m
            photo_regions(parts, dmg, a.part_names, a.damage_names, cfg.fusion, a.plausibility)
            return None

        def shipped(m):
            n, parts, dmg, w, h = m
            return photo_detections(n, parts, dmg, a.part_names, a.damage_names, cfg, a.plausibility, w, h)

        t_before, t_shipped = [], []
        for _ in range(2):  # alternating rounds: drift cancels out
            _, tb = timed_each(before, maps, warmup=2)
            got, ts = timed_each(shipped, maps, warmup=2)
            t_before += tb
            t_shipped += ts
        # photo_detections also builds the detections' report entries (sizes in cm): time those without the
        # instances too, by the difference of the shipped step and the instances alone
        from carcheck.pipeline.instances import photo_instances

        def inst_only(m):
            n, parts, dmg, w, h = m
            pl, dl, regions = photo_regions(parts, dmg, a.part_names, a.damage_names, cfg.fusion, a.plausibility)
            return pl, dl, regions

        pre = [inst_only(m) for m in maps]

        def instances(i):
            pl, dl, regions = pre[i]
            n, parts, dmg, w, h = maps[i]
            return photo_instances(n, dl, dmg, pl, a.part_names, a.damage_names, regions,
                                   cfg.fusion.min_region_fraction, w, h, cfg.size)

        counts, t_inst = [], []
        for _ in range(2):
            got, ti = timed_each(instances, range(len(maps)), warmup=2)
            t_inst += ti
            counts = [len(g) for g in got]
        rows[name] = {
            "photos": len(maps),
            "instances_per_photo_mean": round(float(np.mean(counts)), 2) if counts else 0.0,
            "instances_per_photo_max": int(max(counts)) if counts else 0,
            "fusion_only_ms": _ms(t_before),
            "photo_detections_shipped_ms": _ms(t_shipped),
            "photo_instances_alone_ms": _ms(t_inst),
        }
    out = {"cpu": cpu_info(), "threads": 2, "budget_ms_issue27": 15.0, "sets": rows}
    print(f"{'set':12} {'photos':>6} {'inst/photo':>10} {'fusion ms':>10} {'+ instances ms':>15} {'instances alone ms (median / p95)':>34}")
    for k, r in rows.items():
        s = r["photo_instances_alone_ms"]
        print(f"{k:12} {r['photos']:>6} {r['instances_per_photo_mean']:>10} {r['fusion_only_ms']['median']:>10} "
              f"{r['photo_detections_shipped_ms']['median']:>15} {s['median']:>20} / {s['p95']}")
    print(f"budget (issue 27): <= 15 ms per photo")
    print("written", write_results(args.out, out, command=" ".join(["python", *sys.argv])))


if __name__ == "__main__":
    main()
