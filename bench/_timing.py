"""Shared timing helper of the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], runs: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``runs`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def head_ms(head_files: dict, size: tuple[int, int] = (384, 512), runs: int = 200) -> dict[str, float]:
    """Median ms of each image-level head on one shared backbone output (a random ``size`` image,
    bf16 pass, as in the assessment): ``{"<name>_head_ms": ms}`` for the files that exist. A head
    with its own backbone (:class:`StandaloneNet`) is timed on the photo itself: its whole extra pass."""
    import torch

    from carcheck.models.backbone import build_backbone, inference_context
    from carcheck.models.classifier import StandaloneNet, load_head

    bb = build_backbone("lite0")
    x = torch.rand(1, 3, *size).contiguous(memory_format=torch.channels_last)
    with inference_context():
        out = bb(x, with_pooled=True)
    res = {}
    for name, path in head_files.items():
        if path is not None and path.is_file():
            head, _ = load_head(path)
            if isinstance(head, StandaloneNet):  # its own backbone pass on the photo (bf16, like the assessment)
                with inference_context():
                    res[f"{name}_head_ms"] = 1000 * median_time(lambda: head(x), max(20, runs // 10), warmup=3)
                continue
            with torch.inference_mode():
                res[f"{name}_head_ms"] = 1000 * median_time(lambda: head(out), runs, warmup=10)
    return res
