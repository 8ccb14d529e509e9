"""``carcheck assess``: the photos of one case in, a JSON + HTML report out."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..models.inference import DEFAULT_SEGMENTERS
from ._common import console, emit_json, track


def assess_command(
    photos: List[Path] = typer.Argument(..., help="Photos and/or folders of one case."),
    out: Path = typer.Option(..., "--out", help="Folder for report.json and report.html."),
    case_id: Optional[str] = typer.Option(None, "--case-id", help="Case id (default: random)."),
    weights: Optional[List[Path]] = typer.Option(None, help="Segmenter weights (.safetensors), repeatable; together they "
                                                 "must provide parts and damage heads. Default: the shipped models."),
    vehicle_threshold: Optional[float] = typer.Option(None, help="Presence-gate threshold (default: the calibrated one)."),
    review_threshold: float = typer.Option(0.5, help="Findings with C_refined below this are flagged for review."),
    min_region: float = typer.Option(0.0005, help="Drop damaged regions smaller than this fraction of the photo."),
    json_out: bool = typer.Option(False, "--json", help="Also print the report JSON on stdout."),
) -> None:
    """Assess one case: skip photos without a vehicle, find damaged parts, size them, reconcile the
    views and flag doubtful findings. Exit code 1 when any photo could not be read."""
    from ..pipeline.assess import AssessConfig, Assessor
    from ..pipeline.fusion import FusionConfig
    from ..report.html import write_report

    cfg = AssessConfig(review_threshold=review_threshold, fusion=FusionConfig(min_region_fraction=min_region))
    if vehicle_threshold is not None:
        cfg.vehicle_threshold = vehicle_threshold
    assessor = Assessor(cfg, weights or DEFAULT_SEGMENTERS)
    report, visuals = assessor.assess([str(p) for p in photos], case_id, track=track)
    paths = write_report(report, visuals, out, assessor.part_names, assessor.damage_names)
    if json_out:
        emit_json(report.model_dump(mode="json"))
    s = report.summary
    console.print(f"[b]{s.verdict}[/b]")
    for p in report.photos:
        if p.status != "assessed":
            console.print(f"  [{'red' if p.status == 'failed' else 'yellow'}]{p.status}[/]: {p.path}: {p.reason}")
    console.print(f"report: {paths['html']} (and {paths['json'].name})")
    if s.failed:
        raise typer.Exit(1)
