"""What every image-level trainer does first: threads, the command line, the run folder with its
``config.json``, and the seeds."""

from __future__ import annotations

import json
import random
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

__all__ = ["seed_everything", "start_run"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_run(cfg) -> Path:
    """Set ``cfg.threads`` torch threads, record the command line in ``cfg.command`` (when empty),
    create ``cfg.out`` with ``config.json`` (the dataclass ``cfg``) and seed everything with
    ``cfg.seed``. Returns the run folder."""
    torch.set_num_threads(cfg.threads)
    cfg.command = cfg.command or " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = asdict(cfg)
    if "precision" in state:  # the precision actually used, resolved from "auto" by the hardware
        from ..models.runtime import resolve_precision

        state["precision_resolved"] = resolve_precision(cfg.precision, getattr(cfg, "device", "cpu"))
    (out / "config.json").write_text(json.dumps(state, indent=2))
    seed_everything(cfg.seed)
    return out
