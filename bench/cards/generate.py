"""The one model-card generator: every shipped model's card (``src/carcheck/models/weights/*.md``, beside its
weights file) from its training run folder (runs/..., config.json, best.json, metrics.jsonl), the weights
file's own metadata and the benchmark JSONs in bench/results/, so every number in a card is a benchmark's or
the run's.

Run: python bench/cards/generate.py [--only joint|parts|cardd|heads ...] [--parts-run RUN] [--cardd-run RUN]

One writer per model family, each a module of this folder with a ``main()``:

- ``joint``: segmenter_joint_lite0.md (model_card.py; runs/joint_lite0_fpn, bench/results/segmentation.json,
  joint_vs_parts_only.json)
- ``parts``: segmenter_parts_lite0.md (parts_model_card.py; runs/parts_unfreeze2, parts_designs.json)
- ``cardd``: segmenter_damage_cardd_lite0.md (cardd_model_card.py; runs/cardd_fpn96, cardd.json,
  cardd_calibration.json)
- ``heads``: classifier_*.md and embedding_*.md (head_cards.py; the files' metadata, classifiers.json,
  identity.json); the photo-type head's card is written by bench/accuracy/photo_type.py with its benchmark.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WRITERS = {"joint": "model_card.py", "parts": "parts_model_card.py", "cardd": "cardd_model_card.py",
           "heads": "head_cards.py"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(WRITERS), default=list(WRITERS))
    ap.add_argument("--parts-run", default=None, help="The part model's run folder (default: parts_model_card.py's).")
    ap.add_argument("--cardd-run", default=None, help="The CarDD model's run folder (default: cardd_model_card.py's).")
    a = ap.parse_args()
    for name in a.only:
        script = HERE / WRITERS[name]
        run = {"parts": a.parts_run, "cardd": a.cardd_run}.get(name)
        sys.argv = [str(script)] + (["--run", run] if run else [])
        print(f"[{name}] {script.name}", flush=True)
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
