"""``carcheck assess``: the photos of one case in, a JSON + HTML report out."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from ._common import PRECISION_HELP, check_precision, console, emit_json, track


def assess_command(
    photos: List[Path] = typer.Argument(..., help="Photos and/or folders of one case."),
    out: Path = typer.Option(..., "--out", help="Folder for report.json and report.html."),
    case_id: Optional[str] = typer.Option(None, "--case-id", help="Case id (default: random)."),
    weights: Optional[List[Path]] = typer.Option(None, help="Segmenter weights (.safetensors), repeatable; together they "
                                                 "must provide parts and damage heads. Default: the shipped models."),
    vehicle_threshold: Optional[float] = typer.Option(None, help="ImageNet presence-rule threshold, used only when no "
                                                      "presence head is installed (default: the calibrated one)."),
    presence_threshold: float = typer.Option(0.5, help="P(vehicle) of the presence head below which a photo is out of scope."),
    head: Optional[List[Path]] = typer.Option(None, "--head", help="Extra image-level head file (e.g. a SOCAR dirt "
                                              "classifier), repeatable; shown in the car-state section."),
    no_heads: bool = typer.Option(False, "--no-heads", help="Run without the shipped image-level heads."),
    gradcam: bool = typer.Option(True, help="Grad-CAM maps for flagged photos in the HTML report."),
    review_threshold: float = typer.Option(0.5, help="Findings with C_refined below this are flagged for review."),
    min_region: float = typer.Option(0.0005, help="Drop damaged regions smaller than this fraction of the photo."),
    json_out: bool = typer.Option(False, "--json", help="Also print the report JSON on stdout."),
    precision: str = typer.Option("auto", callback=check_precision,
                                  help=PRECISION_HELP + " With --engine auto and onnxruntime installed (the default), "
                                  "auto is fp32 on ONNX Runtime."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: every core)."),
    engine: str = typer.Option("auto", help="auto (ONNX Runtime in fp32 where onnxruntime is installed, measured "
                                            "never slower than torch bf16; else eager torch), torch or onnx."),
    cost_table: Optional[Path] = typer.Option(None, "--cost-table", help="Repair cost table (YAML) replacing the "
                                              "shipped one (format: carcheck/pipeline/cost_table.yaml)."),
    index: Optional[Path] = typer.Option(None, "--index", help="Reused-photo index (SQLite file, created if missing): "
                                         "photos matching a photo of another indexed case are flagged with that "
                                         "case's id, then this case is added. Without it only duplicates inside the "
                                         "case and EXIF inconsistencies are checked."),
    pdf: bool = typer.Option(False, "--pdf", help="Also write report.pdf: the HTML report printed by headless "
                             "Chromium (needs Playwright, pip install 'carcheck[pdf]', and a Chromium)."),
) -> None:
    """Assess one case: skip photos without a vehicle, find damaged parts, size them, reconcile the
    views, double-check with the image-level heads (damage filter, severity, car state, make/model,
    same vehicle) and flag doubtful findings. Exit codes: 0 every file was read, 1 some file could
    not be read (each is in the report with its reason), 2 usage error (e.g. --out is a file or
    cannot be written, or --pdf without Playwright / Chromium; checked before any model loads; or the PDF could
    not be printed), 3 an internal error (a bug)."""
    from ..data.images import display_name
    from ..report.html import prepare_out_dir

    try:
        prepare_out_dir(out)
    except ValueError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(2)
    if pdf:
        from ..report.pdf import PdfError, check_pdf_support

        try:
            check_pdf_support()
        except PdfError as e:
            console.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(2)
    from pydantic import ValidationError

    from ..models.inference import DEFAULT_SEGMENTERS
    from ..pipeline.assess import Assessor
    from ..schema import AssessConfig, FusionConfig

    try:
        cfg = AssessConfig(review_threshold=review_threshold, fusion=FusionConfig(min_region_fraction=min_region),
                           presence_threshold=presence_threshold, gradcam=gradcam, precision=precision,
                           threads=threads, engine=engine,
                           **({} if vehicle_threshold is None else {"vehicle_threshold": vehicle_threshold}))
    except ValidationError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(2)
    from ..pipeline.reuse import ReuseIndex, SQLiteHashStore

    try:  # a bad --index or --cost-table (CostTableError, a ValueError) is a usage error, found before any model loads
        reuse_index = ReuseIndex(SQLiteHashStore(index) if index is not None else None)
        assessor = Assessor(cfg, weights or DEFAULT_SEGMENTERS, heads={} if no_heads else None, extra_heads=head or (),
                            cost_table=cost_table, reuse_index=reuse_index)
    except (FileNotFoundError, ValueError, KeyError) as e:
        console.print(f"[red]error:[/] {escape(display_name(str(e)))}", highlight=False)
        raise typer.Exit(2)
    from ..report.html import write_report

    # the same code path as carcheck.assess(..., out_dir=...): assess, then the caller writes report.json + .html
    report, visuals = assessor.assess([str(p) for p in photos], case_id, track=track)
    write_report(report, visuals, out, assessor.part_names, assessor.damage_names)
    del visuals
    if json_out:
        emit_json(report.model_dump(mode="json"))
    s = report.summary
    console.print(f"[b]{escape(s.verdict)}[/b]", highlight=False)
    for p in report.photos:  # paths and reasons are printable text already; escape() keeps rich markup out
        if p.status != "assessed":
            console.print(f"  [{'red' if p.status == 'failed' else 'yellow'}]{p.status}[/]: {escape(p.path)}: "
                          f"{escape(p.reason or '')}", highlight=False)
    console.print(f"report: {escape(display_name(Path(out) / 'report.html'))} (and report.json)", highlight=False)
    if pdf:
        from ..report.pdf import PdfError, write_pdf

        try:
            console.print(f"pdf: {escape(display_name(write_pdf(Path(out) / 'report.html')))}", highlight=False)
        except PdfError as e:
            console.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(2)
    if s.failed:
        raise typer.Exit(1)
