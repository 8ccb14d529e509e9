"""Assess a fleet of cases: one case per immediate sub-folder of a root folder, resumable.

Each case ``ROOT/CASE`` (every file in it is a photo of the case, as
:meth:`~carcheck.pipeline.assess.Assessor.assess` reads folders) gets ``OUT/CASE/report.json`` and
``OUT/CASE/report.html``. The two files are written into a hidden temporary folder beside
``OUT/CASE`` and renamed into place, so a case folder in ``OUT`` is either complete or absent (or
left from an older, killed writer: then it lacks a file or holds unparsable JSON, and the case is
redone). A case whose report is complete is skipped on a re-run. A case that raises anything
(folder vanished, unreadable, output path blocked) is recorded as failed with its error; the
others go on. ``OUT/summary.csv`` gets one row per case as cases finish (a killed run keeps what
it did) and is rewritten, sorted by case, at the end.

Two modes:

- ``ray``: Ray actors, each loading the models once (one
  :class:`~carcheck.pipeline.assess.Assessor` per actor), are handed cases one at a time as they
  become free. Each actor sets its torch threads to ``max(1, cores // workers)`` before building
  its assessor: several processes each using every core oversubscribe OpenMP (two processes of 2
  threads on 2 cores made a forward pass 20x slower, as issue 13 measured). A local Ray is started unless one is already
  running in this process or a cluster address is given. On a cluster, ROOT and OUT must be
  visible at the same paths on every node (shared file system) and carcheck installed there.
- ``loop``: one assessor in this process, cases one after another.

Default number of Ray workers on a local Ray: one per core, 1 torch thread each
(:func:`default_local_workers`, which gives the measurement it rests on).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

__all__ = ["SUMMARY_FIELDS", "STATUSES", "MODES", "WORKER_MEMORY_BYTES", "CaseResult", "default_local_workers",
           "find_cases", "read_complete", "assess_case", "write_summary", "run_batch"]

#: Header of ``summary.csv``, in order.
SUMMARY_FIELDS = ("case", "photos", "findings", "for_review", "seconds", "status", "error")
#: A case's status in the summary.
STATUSES = ("ok", "skipped", "failed")
#: ``run_batch`` modes.
MODES = ("ray", "loop")
#: RAM kept per default Ray worker: a process with the models loaded peaked at 1.2 GB resident after
#: assessing a 3-photo case (measured).
WORKER_MEMORY_BYTES = int(1.5 * 2**30)
#: Seconds to wait for the first Ray worker to load its models before every pending case fails.
WORKER_START_TIMEOUT_S = 600.0
#: Files a case's output folder may hold; an existing folder with anything else is never replaced.
REPORT_FILES = ("report.json", "report.html")

_PARTIAL = ".partial-"
_OLD = ".old-"


@dataclass
class CaseResult:
    """One case's row of ``summary.csv``.

    Attributes:
        case: case id (the sub-folder's name).
        photos: files in the case (from its report; 0 when it failed).
        findings: case-level findings in the report.
        for_review: findings flagged for human review.
        seconds: wall-clock seconds this run spent on the case (assessment and writing; 0 when skipped).
        status: ``ok`` (assessed and written now), ``skipped`` (a complete report was already there)
            or ``failed``.
        error: ``ExceptionType: message`` when failed, else empty.
    """

    case: str
    photos: int = 0
    findings: int = 0
    for_review: int = 0
    seconds: float = 0.0
    status: str = "ok"
    error: str = ""

    def row(self) -> dict[str, object]:
        """The ``summary.csv`` row (keys :data:`SUMMARY_FIELDS`)."""
        return {k: getattr(self, k) for k in SUMMARY_FIELDS}


def _describe(e: BaseException, limit: int = 500) -> str:
    """``Type: message`` on one line (newlines collapsed), at most ``limit`` characters."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def find_cases(root: str | Path, exclude: Sequence[str | Path] = ()) -> list[Path]:
    """The case folders of ``root``: its immediate sub-folders, sorted by name.

    Hidden folders (``.name``) and any folder in ``exclude`` (e.g. the output folder when it lies
    inside ``root``) are left out.

    Raises:
        NotADirectoryError: ``root`` is not a folder (FileNotFoundError when it is missing).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    skip = {Path(p).resolve() for p in exclude}
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.resolve() not in skip),
                  key=lambda p: p.name)


def _unusable(photos: int, failed: int) -> str:
    """Why a written report does not complete its case ("" when it does): no photos at all, or not
    one photo that could be read (a transient cause, e.g. a file system gone away, is then retried)."""
    if photos == 0:
        return "the case folder holds no photos"
    if failed >= photos:
        return f"none of the {photos} photo(s) could be read (reasons in the case's report)"
    return ""


def read_complete(case_out: str | Path) -> CaseResult | None:
    """The ``skipped`` result of a case whose report in ``case_out`` is complete, else None.

    Complete means: ``report.json`` and ``report.html`` both exist, ``report.json`` parses as
    JSON holding ``summary.photos``, ``summary.findings`` and ``summary.findings_for_review``
    (the numbers returned), and at least one photo of the case could be read. Never raises.
    """
    case_out = Path(case_out)
    try:
        if not all((case_out / f).is_file() for f in REPORT_FILES):
            return None
        s = json.loads((case_out / "report.json").read_text(encoding="utf-8"))["summary"]
        if _unusable(int(s["photos"]), int(s.get("failed", 0))):
            return None  # redone on a re-run
        return CaseResult(case_out.name, int(s["photos"]), int(s["findings"]), int(s["findings_for_review"]),
                          0.0, "skipped")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished folder ``tmp`` to ``final``, replacing an older report folder there.

    Raises:
        FileExistsError: ``final`` is a folder holding files other than :data:`REPORT_FILES`
            (never deleted: it is not ours), or a file or link blocks it.
        OSError: a rename failed.
    """
    _check_target(final)
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}{_OLD}{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def _check_target(final: Path) -> None:
    """Raise FileExistsError unless ``final`` is absent or a folder holding only report files."""
    if final.is_dir() and not final.is_symlink():
        extra = sorted(p.name for p in final.iterdir() if p.name not in REPORT_FILES)
        if extra:
            raise FileExistsError(f"{final} holds other files ({', '.join(extra[:3])}); not replacing it")
    elif final.exists() or final.is_symlink():
        raise FileExistsError(f"output path {final} exists and is not a folder")


def assess_case(assessor, case_dir: str | Path, out: str | Path) -> CaseResult:
    """Assess one case folder and write its report to ``out/<folder name>``; never raises.

    Args:
        assessor: a :class:`~carcheck.pipeline.assess.Assessor` (models loaded).
        case_dir: the case's folder of photos; its name is the case id.
        out: the batch output folder (exists).
    Returns:
        ``ok`` with the report's numbers, or ``failed`` with the error (any exception: the folder
        is gone, the output cannot be written, the models raised; or no photo of the case could be
        read, or it has none: then the report is written and the case is redone on a re-run).
    """
    from ..report.html import write_report

    case_dir, out = Path(case_dir), Path(out)
    case = case_dir.name
    t0 = time.perf_counter()
    try:
        if not case_dir.is_dir():
            raise FileNotFoundError(f"case folder {case_dir} is missing")
        _check_target(out / case)  # before the work, not only at the rename
        report, visuals = assessor.assess([str(case_dir)], case)
        tmp = out / f".{case}{_PARTIAL}{uuid.uuid4().hex[:8]}"
        try:
            write_report(report, visuals, tmp, assessor.part_names, assessor.damage_names)
            _install(tmp, out / case)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        s = report.summary
        secs = round(time.perf_counter() - t0, 3)
        unusable = _unusable(s.photos, s.failed)
        if unusable:  # the report is written (it says why per file), but the case is not done
            return CaseResult(case, s.photos, s.findings, s.findings_for_review, secs, "failed", unusable)
        return CaseResult(case, s.photos, s.findings, s.findings_for_review, secs, "ok")
    except Exception as e:  # one case never stops the batch
        return CaseResult(case, seconds=round(time.perf_counter() - t0, 3), status="failed", error=_describe(e))


def _csv_text(results: Iterable[CaseResult], header: bool) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    if header:
        w.writeheader()
    for r in results:
        w.writerow(r.row())
    return buf.getvalue()


def write_summary(path: str | Path, results: Iterable[CaseResult]) -> Path:
    """Write ``summary.csv`` (header :data:`SUMMARY_FIELDS`, rows sorted by case) atomically.

    Written to a temporary file beside ``path`` and renamed over it (os.replace).

    Raises:
        OSError: the folder is not writable.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_PARTIAL}{uuid.uuid4().hex[:8]}")
    tmp.write_text(_csv_text(sorted(results, key=lambda r: r.case), header=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


class _SummaryLog:
    """``summary.csv`` while the run goes on: the header now, then one appended row per finished case."""

    def __init__(self, path: Path) -> None:
        self.path = path
        write_summary(path, [])

    def add(self, result: CaseResult) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(_csv_text([result], header=False))
            f.flush()
            os.fsync(f.fileno())


def _cores() -> int:
    """CPU cores this process may use."""
    from ..models.runtime import available_cores

    return available_cores()


def default_local_workers(cores: int | None = None) -> int:
    """Ray workers started by default on a local Ray: one per core (1 torch thread each), at most
    one per :data:`WORKER_MEMORY_BYTES` of RAM.

    Chosen by measurement on the 2-core development machine (8 cases of 3 ``car_parts`` test
    photos, Ray mode, ``--precision auto`` = bf16 there; seconds from the first finished case to
    the last, i.e. 7 cases after start-up): machine quiet, 1 worker x 2 threads 5.7 s against
    2 workers x 1 thread 5.5 s (a tie; whole runs 12.1 s vs 12.4 s); machine shared with other
    jobs (load average 1.7-8.7 as the runs began), 1 x 2 took 26-42 s (6 runs) and 2 x 1 9-15 s
    (5 runs): an OpenMP team of 2 threads stalls whenever another process takes one of its
    cores, single-thread workers do not. Larger machines were not measured; one worker per core
    is the same rule carried over.

    Args:
        cores: CPU cores (default: those this process may use).
    """
    cores = cores or _cores()
    mem = 0
    if hasattr(os, "sysconf"):
        try:
            mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            mem = 0
    return max(1, min(cores, mem // WORKER_MEMORY_BYTES) if mem else cores)


def _make_assessor(precision: str, threads: int | None):
    """Set this process's torch threads, then load the models (an Assessor) with ``precision``."""
    from ..models.runtime import set_threads
    from ..pipeline.assess import Assessor
    from ..schema import AssessConfig

    n = set_threads(threads)
    return Assessor(AssessConfig(precision=precision, threads=n))


class _CaseWorker:
    """A Ray actor's body: models loaded once in ``__init__``, then one case per :meth:`run`."""

    def __init__(self, threads: int, precision: str) -> None:
        self.assessor = _make_assessor(precision, threads)

    def ready(self) -> int:
        """The process id, once the models are loaded."""
        return os.getpid()

    def run(self, case_dir: str, out: str) -> CaseResult:
        return assess_case(self.assessor, case_dir, out)


def _fail_all(cases: Iterable[Path], error: str) -> Iterator[CaseResult]:
    for c in cases:
        yield CaseResult(c.name, status="failed", error=error)


def _run_loop(todo: list[Path], out: Path, threads: int | None, precision: str) -> Iterator[CaseResult]:
    try:
        assessor = _make_assessor(precision, threads)
    except Exception as e:
        yield from _fail_all(todo, f"models could not load: {_describe(e)}")
        return
    for case_dir in todo:
        yield assess_case(assessor, case_dir, out)


def _no_track(iterable: Iterable, **_: object) -> Iterable:
    return iterable


def run_batch(root: str | Path, out: str | Path, mode: str = "ray", workers: int | None = None,
              ray_address: str | None = None, precision: str = "auto", threads: int | None = None,
              track: Callable[..., Iterable] = _no_track,
              on_result: Callable[[CaseResult], None] | None = None, plan: dict | None = None) -> list[CaseResult]:
    """Assess every case folder of ``root`` into ``out``; skip the complete ones; write ``out/summary.csv``.

    Args:
        root: folder with one sub-folder of photos per case (see :func:`find_cases`).
        out: output folder (created); ``out/CASE/report.{json,html}`` and ``out/summary.csv``.
        mode: ``ray`` (actors, see the module docstring) or ``loop`` (in this process).
        workers: Ray actors (default: :func:`default_local_workers` on a local Ray, i.e. 2 on 2
            cores; one per node on a cluster); ignored by ``loop``.
        ray_address: an existing Ray cluster (``ray://host:10001``, ``auto``...); default: the Ray
            this process already runs (treated like a cluster), else a local Ray with this
            machine's cores, shut down at the end.
        precision: ``auto`` | ``fp32`` | ``bf16`` (:func:`~carcheck.models.runtime.resolve_precision`).
        threads: torch threads per worker (default ``max(1, cores // workers)``; ``loop``: every core).
        track: progress wrapper called as ``track(iterable, description=..., total=...)``
            (e.g. rich's ``track``); it iterates the results as cases finish.
        on_result: called with each new result as its case finishes (after its summary row is written).
        plan: if given, filled with the ``workers`` and ``threads`` actually used (Ray mode).
    Returns:
        one :class:`CaseResult` per case, sorted by case id (a skipped case with the numbers of its
        report.json).
    Raises:
        FileNotFoundError / NotADirectoryError: ``root`` is missing or not a folder.
        FileExistsError: ``out`` exists and is not a folder.
        ValueError: an unknown mode or precision, ``workers`` or ``threads`` below 1, or ``out``
            the same folder as ``root``.
        ImportError: ``mode="ray"`` without Ray installed.
        OSError: ``out`` or its summary cannot be written.
    """
    from ..models.runtime import PRECISIONS

    root, out = Path(root), Path(out)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if (workers is not None and workers < 1) or (threads is not None and threads < 1):
        raise ValueError("workers and threads must be at least 1")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    cases = find_cases(root, exclude=[out])
    if out.resolve() == root.resolve():
        raise ValueError(f"the output folder must not be the case root {root}")
    if mode == "ray":
        import ray  # noqa: F401  (ImportError now, before anything is written)
    out.mkdir(parents=True, exist_ok=True)
    names = {c.name for c in cases}
    for p in out.iterdir():  # leftovers of a killed run
        if p.is_dir() and p.name.startswith(".") and any(m in p.name for m in (_PARTIAL, _OLD)):
            if p.name[1:].split(_PARTIAL)[0].split(_OLD)[0] in names:
                shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name.startswith(f".summary.csv{_PARTIAL}"):
            p.unlink(missing_ok=True)

    results: dict[str, CaseResult] = {}
    todo: list[Path] = []
    for c in cases:
        done = read_complete(out / c.name)
        if done is None:
            todo.append(c)
        else:
            results[c.name] = done
    log = _SummaryLog(out / "summary.csv")
    for r in results.values():
        log.add(r)
    if todo:
        plan = {} if plan is None else plan
        from .cluster import _run_ray  # Ray is imported only for mode='ray'

        stream = (_run_loop(todo, out, threads, precision) if mode == "loop"
                  else _run_ray(todo, out, workers, threads, precision, ray_address, plan))
        for r in track(stream, description="assessing cases", total=len(todo)):
            results[r.case] = r
            log.add(r)
            if on_result is not None:
                on_result(r)
    final = sorted(results.values(), key=lambda r: r.case)
    write_summary(out / "summary.csv", final)
    return final
