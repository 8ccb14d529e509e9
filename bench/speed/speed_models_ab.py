"""What the fine-tuned segmenters cost in the whole assessment: an A/B of the shipped models against the frozen ones
they replaced, in one process, alternating on the same photos (so machine drift between runs cancels out).

A: the shipped part and CarDD models (each with its own fine-tuned copy of the backbone's last two stages).
B: the frozen-backbone models shipped before them, restored from git (see bench/studies/parts_designs.py and
bench/studies/cardd_designs.py): ``runs/parts_frozen/best.safetensors`` and ``runs/cardd_fpn96/calibrated.safetensors``.

Per photo: ``Assessor.assess_photo`` (decode excluded; gate, backbone, both decoders, every head, fusion), 20 DSMLR
car_parts test photos, three warm-up photos per model, two rounds, 2 threads, the assessment's precision; medians.

Run: python bench/speed/speed_models_ab.py   (about a minute; writes bench/results/speed_models_ab.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, time_stats, timed_each, write_results  # noqa: E402,F401

import torch

REPO = ROOT
PHOTOS = DATA / "car_parts" / "testset" / "JPEGImages"
FROZEN = [REPO / "runs" / "parts_frozen" / "best.safetensors", REPO / "runs" / "cardd_fpn96" / "calibrated.safetensors"]


def main() -> None:
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    from carcheck.models.inference import DEFAULT_SEGMENTERS
    from carcheck.models.runtime import cpu_info
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig

    missing = [str(p) for p in FROZEN if not p.is_file()]
    if missing or not PHOTOS.is_dir():
        sys.exit(f"missing: {missing or PHOTOS} (see the module doc)")
    photos = sorted(PHOTOS.glob("*.jpg"))[:20]
    models = {"fine_tuned": Assessor(AssessConfig(threads=2), weights=DEFAULT_SEGMENTERS),
              "frozen": Assessor(AssessConfig(threads=2), weights=FROZEN)}
    images = {n: [(p, a.read_photo(p)) for p in photos] for n, a in models.items()}
    for n, a in models.items():  # warm-up: 3 photos each
        for p, im in images[n][:3]:
            a.assess_photo(p, im)
    ts: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(2):  # the two models alternate, so a load change hits both
        for n, a in models.items():
            ts[n] += timed_each(lambda pi, a=a: a.assess_photo(*pi), images[n])[1]
    stats = {n: time_stats(v, warmup=3) for n, v in ts.items()}
    res = {"machine": cpu_info(), "precision": models["frozen"].precision, "engine": models["frozen"].engine,
           "photos": len(photos), "rounds": 2,
           "median_ms": {n: round(1000 * s["median_s"], 1) for n, s in stats.items()},
           "p95_ms": {n: round(1000 * s["p95_s"], 1) for n, s in stats.items()}}
    res["difference_ms"] = round(res["median_ms"]["fine_tuned"] - res["median_ms"]["frozen"], 1)
    for n, v in res["median_ms"].items():
        print(f"{n:>10}: {v:.1f} ms per photo (median of {len(ts[n])})")
    print(f"difference: {res['difference_ms']:+.1f} ms ({res['machine'].get('cpu_model')}, {res['precision']})")
    out = REPO / "bench" / "results" / "speed_models_ab.json"
    write_results(out, res, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
