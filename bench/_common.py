"""What every benchmark script shares: paths, timing, and the header every results JSON carries.

Use it from a script anywhere under bench/ (scripts run as ``python bench/<group>/<name>.py`` from the
repository root; bench/ itself is put on ``sys.path`` by the two lines below)::

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ (parents[0] for bench/cases.py)
    from _common import DATA, RESULTS, timed, write_results  # noqa: E402

    res = {"recall": 0.63, "seconds_per_photo": timed(lambda: assessor.assess([photo]), runs=5, warmup=1)}
    write_results(RESULTS / "cases.json", res)  # adds "header": machine, date, commit, command

- :data:`DATA`: the shared data folder: ``$CARCHECK_DATA``, default ``../shared/data`` beside the repository.
- :data:`ROOT` (the repository), :data:`RESULTS` (bench/results), :data:`RUNS` (runs/, git-ignored).
- :func:`timed`: median and p95 seconds over ``runs`` calls after ``warmup`` untimed calls;
  :func:`timed_each` the same over one call per item (each photo once, after ``warmup`` untimed items),
  returning the calls' results too; :func:`clock` one call's result and seconds (a cold first request);
  :func:`stopwatch` a phase's wall seconds; :func:`time_stats` the statistics of given durations;
  :func:`median_time` the median alone (the older helper of bench/_timing.py); :func:`head_ms` the
  image-level heads' ms per photo. No script reads the clock itself.
- :data:`CARDD_TARGETS` (issue 15's targets on CarDD test) and :func:`quick_coco` (the ``--quick`` subset
  of a COCO file) for the CarDD benchmarks.
- :func:`results_header`: ``{"machine": cpu_info(), "date", "git_commit", "git_dirty", "command"}``;
  :func:`write_results` writes a JSON with that header first (a result without the machine and the
  commit it ran on is not a result).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["ROOT", "DATA", "RESULTS", "RUNS", "TESTS", "timed", "timed_each", "clock", "stopwatch", "time_stats",
           "median_time", "head_ms", "CARDD_TARGETS", "quick_coco", "git_commit", "results_header", "write_results"]

#: the repository root
ROOT = Path(__file__).resolve().parents[1]
#: the shared data folder (photos, label sets): $CARCHECK_DATA, default ../shared/data beside the repository
DATA = Path(os.environ.get("CARCHECK_DATA") or ROOT.parent / "shared" / "data")
#: where the results JSONs live (committed)
RESULTS = ROOT / "bench" / "results"
#: scratch output (runs/, git-ignored)
RUNS = ROOT / "runs"
#: the tests folder (its support/ package: the test server harness, bench/speed/service.py uses it)
TESTS = ROOT / "tests"


def time_stats(seconds: Sequence[float], warmup: int = 0) -> dict:
    """``{"median_s", "p95_s", "min_s", "max_s", "mean_s", "runs", "warmup"}`` of measured durations (p95: nearest
    rank, the slowest call when fewer than 20); ``warmup``: how many untimed calls preceded them (recorded)."""
    ts = sorted(seconds)
    if not ts:
        raise ValueError("no durations to summarise")
    p95 = ts[min(len(ts) - 1, max(0, -(-95 * len(ts) // 100) - 1))]
    return {"median_s": statistics.median(ts), "p95_s": p95, "min_s": ts[0], "max_s": ts[-1],
            "mean_s": statistics.fmean(ts), "runs": len(ts), "warmup": warmup}


def timed(fn: Callable[[], object], runs: int = 20, warmup: int = 3) -> dict:
    """Wall-clock seconds of ``fn()``: :func:`time_stats` over ``runs`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return time_stats(ts, warmup)


def timed_each(fn: Callable[[T], R], items: Iterable[T], warmup: int = 0) -> tuple[list[R], list[float]]:
    """``fn(item)`` once per item, each call timed: ``(results in item order, seconds of each call)``
    (:func:`time_stats` of the seconds gives median / p95). The first ``warmup`` items are first run once
    untimed (then timed like the rest)."""
    items = list(items)
    for item in items[:warmup]:
        fn(item)
    out, ts = [], []
    for item in items:
        t = time.perf_counter()
        out.append(fn(item))
        ts.append(time.perf_counter() - t)
    return out, ts


def clock(fn: Callable[..., R], *args, **kwargs) -> tuple[R, float]:
    """``(fn(*args, **kwargs), its wall-clock seconds)``: one call, for what is measured once (a cold first
    request, writing one report)."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def stopwatch() -> Callable[[], float]:
    """A function giving the wall-clock seconds since this call: a phase's or the whole run's duration
    (``elapsed = stopwatch(); ...; res["wall_s"] = round(elapsed(), 1)``), progress lines."""
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0


def median_time(fn: Callable[[], object], runs: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``runs`` calls after ``warmup`` untimed calls."""
    return timed(fn, runs, warmup)["median_s"]


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


#: issue 15's targets on CarDD test (bench/accuracy/cardd.py adds its per-class and parts targets)
CARDD_TARGETS = {"segm_AP": 0.35, "bbox_AP": 0.38, "binary_iou": 0.60, "F_beta": 0.70, "added_ms_per_photo": 60.0}


def quick_coco(path: str | Path, n: int = 30, out: str | Path | None = None) -> Path:
    """The ``--quick`` subset of a COCO file: its first ``n`` images and their annotations, written to ``out``
    (default ``runs/quick/<name>``, git-ignored); returns that path. A smoke run, not a result."""
    raw = json.loads(Path(path).read_text())
    keep = {im["id"] for im in raw["images"][:n]}
    raw["images"] = [im for im in raw["images"] if im["id"] in keep]
    raw["annotations"] = [a for a in raw["annotations"] if a["image_id"] in keep]
    out = Path(out) if out is not None else RUNS / "quick" / Path(path).name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw))
    return out


def git_commit(path: Path = ROOT) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it) of the repository; (None, None) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                                check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip() != ""
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def results_header(command: str | None = None) -> dict:
    """The header of a results JSON: the machine (:func:`carcheck.models.runtime.cpu_info`), the date (UTC),
    the git commit (and whether the tree differed from it) and the exact command (default: this process's)."""
    from carcheck.models.runtime import cpu_info

    commit, dirty = git_commit()
    if command is None:
        argv = [os.path.relpath(sys.argv[0], ROOT) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
        command = "python " + shlex.join(argv)
    return {"machine": cpu_info(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": commit, "git_dirty": dirty, "command": command}


def write_results(path: str | Path, results: dict, command: str | None = None, indent: int = 2, **dump_kw) -> Path:
    """Write ``results`` as JSON to ``path`` (a name is taken under :data:`RESULTS`) with
    :func:`results_header` as its first key ``"header"``; returns the path."""
    path = Path(path)
    if not path.is_absolute() and path.parent == Path("."):
        path = RESULTS / path
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in results.items() if k != "header"}
    path.write_text(json.dumps({"header": results_header(command), **body}, indent=indent, **dump_kw) + "\n",
                    encoding="utf-8")
    return path
