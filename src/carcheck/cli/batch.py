"""``carcheck batch``: a fleet of cases (one sub-folder each) in, one report per case and a summary out.

Heavy modules (ray, torch, the pipeline, the report writer) are imported inside the command, so
``carcheck --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import console

#: Cases listed one per row in the final table; beyond this only the failed ones are listed.
_TABLE_ROWS = 20


def _progress(iterable, description: str = "working", total: int | None = None, **_):
    """rich progress bar on stderr, with a known total (results arrive as cases finish)."""
    from rich.progress import track

    return track(iterable, description=description, total=total, console=console, transient=True)


def _print_table(results, summary: Path) -> None:
    from rich.table import Table

    failed = [r for r in results if r.status == "failed"]
    shown = results if len(results) <= _TABLE_ROWS else failed[:_TABLE_ROWS]
    colour = {"ok": "green", "skipped": "yellow", "failed": "red"}
    if shown:
        table = Table("case", "photos", "findings", "for review", "seconds", "status", "error")
        for r in shown:
            table.add_row(r.case, str(r.photos), str(r.findings), str(r.for_review), f"{r.seconds:.1f}",
                          f"[{colour[r.status]}]{r.status}[/]", r.error)
        console.print(table)
    if len(shown) < len(failed):
        console.print(f"... and {len(failed) - len(shown)} more failed case(s)")
    n = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    console.print(f"{len(results)} case(s): {n['ok']} ok, {n['skipped']} skipped, {n['failed']} failed; "
                  f"{sum(r.findings for r in results)} finding(s), {sum(r.for_review for r in results)} for review. "
                  f"summary: {summary}")


def batch_command(
    root: Path = typer.Argument(..., help="Folder with one sub-folder of photos per case (case id = folder name)."),
    out: Path = typer.Option(..., "--out", help="Output folder: OUT/CASE/report.{json,html} and OUT/summary.csv."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Existing Ray cluster to use (default: a "
                                              "local Ray). ROOT and OUT must be at the same paths on every node."),
    mode: str = typer.Option("ray", "--mode", help="ray (actors that load the models once) | loop (this process)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Ray actors (default: one per core on a local Ray, "
                                          "measured best on 2 cores; one per node on a cluster). Each gets "
                                          "max(1, cores // workers) torch threads."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 only where the CPU runs it natively) | "
                                  "fp32 | bf16."),
) -> None:
    """Assess every case folder of ROOT; complete reports already in OUT are skipped (resumable).

    A failing case is listed with its error and never stops the others. Exit code 0 when no case failed, 1 when any did, 2 on bad usage (ROOT not a folder, OUT an existing file, an unknown mode or precision, Ray missing for --mode ray)."""  # noqa: E501 (one line: typer keeps line breaks)
    from ..models.runtime import PRECISIONS

    def usage(msg: str) -> typer.Exit:
        console.print(f"[red]error:[/] {msg}")
        return typer.Exit(2)

    if not root.is_dir():
        raise usage(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    if out.exists() and not out.is_dir():
        raise usage(f"{out} exists and is not a folder")
    if mode not in ("ray", "loop"):
        raise usage(f"unknown --mode {mode!r}; choose ray or loop")
    if precision not in PRECISIONS:
        raise usage(f"unknown --precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if ray_address and mode != "ray":
        raise usage("--ray-address needs --mode ray")
    if mode == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise usage("Ray is not installed (pip install ray), or use --mode loop")
    from ..batch.run import run_batch

    try:
        results = run_batch(root, out, mode=mode, workers=workers, ray_address=ray_address, precision=precision,
                            track=_progress)
    except (ValueError, FileExistsError, NotADirectoryError, FileNotFoundError) as e:
        raise usage(str(e))
    _print_table(results, out / "summary.csv")
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
