"""``carcheck compare BEFORE AFTER --out DIR``: pickup vs return (or an earlier claim vs this one)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import PRECISION_HELP, check_precision, console, emit_json, esc, track


def _load_report(path: Path):
    """A ``report.json`` as a CaseReport (ValueError naming the file when it is not one)."""
    from pydantic import ValidationError

    from ..data.images import display_name
    from ..schema import CaseReport

    try:
        return CaseReport.model_validate_json(path.read_bytes())
    except OSError as e:
        raise ValueError(f"{display_name(path)}: cannot be read ({e.strerror or e})") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ValueError(f"{display_name(path)}: not a carcheck report.json ({where}: {err['msg']})") from None


def _report_images(report, report_file: Path) -> dict[str, "object"]:
    """Photos of a report read back from their paths (absolute, or relative to the report's folder or the
    current folder), small; photos that cannot be read are left out."""
    from ..data.images import ImageLoadError, load_image

    out = {}
    for p in report.photos:
        if p.status != "assessed":
            continue
        for cand in (Path(p.path), report_file.parent / p.path, report_file.parent / Path(p.path).name):
            if cand.is_file():
                try:
                    out[p.path] = load_image(cand, max_decoded_pixels=600_000)
                except ImageLoadError:
                    pass
                break
    return out


def compare_command(
    before: Path = typer.Argument(..., help="Before (pickup / earlier case): a folder of photos or a report.json."),
    after: Path = typer.Argument(..., help="After (return / this case): a folder of photos or a report.json."),
    out: Path = typer.Option(..., "--out", help="Folder for compare.json and compare.html (and the report of each "
                                                "side assessed from photos, in before/ and after/)."),
    before_id: Optional[str] = typer.Option(None, "--before-id", help="Case id of the before side (photos only)."),
    after_id: Optional[str] = typer.Option(None, "--after-id", help="Case id of the after side (photos only)."),
    weights: Optional[List[Path]] = typer.Option(None, help="Segmenter weights (.safetensors), repeatable "
                                                 "(default: the shipped models)."),
    no_heads: bool = typer.Option(False, "--no-heads", help="Run without the shipped image-level heads."),
    json_out: bool = typer.Option(False, "--json", help="Also print the comparison JSON on stdout."),
    precision: str = typer.Option("auto", callback=check_precision, help=PRECISION_HELP),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: every core)."),
    engine: str = typer.Option("auto", help="auto, torch or onnx (as carcheck assess)."),
) -> None:
    """Compare two cases of one car part by part: new damage (seen clean before, damaged after),
    pre-existing, changed (type or size grew), not comparable (not visible in one of the two), with the
    same-car check across the cases (verification embeddings when both sides are photos, else the
    make/model of the reports). Exit codes: 0 ok, 1 some photo could not be read, 2 usage error (a side
    that is neither a folder nor a report.json, --out not writable), 3 internal error."""
    from ..report.html import prepare_out_dir

    try:
        prepare_out_dir(out)
        for side, p in (("BEFORE", before), ("AFTER", after)):
            if not (p.is_dir() or (p.is_file() and p.suffix.lower() == ".json")):
                raise ValueError(f"{esc(p)}: {side} must be a folder of photos or a report.json")
        reports = {s: _load_report(p) for s, p in (("before", before), ("after", after)) if p.is_file()}
    except ValueError as e:
        console.print(f"[red]error:[/] {esc(e)}", highlight=False)
        raise typer.Exit(2)
    import numpy as np

    from ..pipeline.compare import compare_cases, same_vehicle_check
    from ..report.compare_html import write_compare

    images: dict[tuple[str, str], np.ndarray] = {}
    embeddings: dict[str, np.ndarray] = {}
    distance = threshold = None
    folders = {s: p for s, p in (("before", before), ("after", after)) if p.is_dir()}
    if folders:
        import torch

        from ..models.inference import DEFAULT_SEGMENTERS
        from ..pipeline.assess import Assessor
        from ..schema import AssessConfig
        from ..report.html import write_report

        cfg = AssessConfig(precision=precision, threads=threads, engine=engine)
        try:
            assessor = Assessor(cfg, weights or DEFAULT_SEGMENTERS, heads={} if no_heads else None)
        except (FileNotFoundError, ValueError, KeyError) as e:
            console.print(f"[red]error:[/] {esc(e)}", highlight=False)
            raise typer.Exit(2)
        if assessor.heads.has("verification"):
            head, info = assessor.heads.get("verification")
            threshold = float(info.threshold)

            def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return head.distance(torch.from_numpy(a), torch.from_numpy(b)).float().numpy()
        for side, folder in folders.items():
            rep, visuals = assessor.assess([str(folder)], before_id if side == "before" else after_id, track=track)
            write_report(rep, visuals, out / side, assessor.part_names, assessor.damage_names)
            reports[side] = rep
            for name, v in visuals.items():
                images[(side, name)] = v.image
            emb = [visuals[p.path].heads.embedding for p in rep.photos
                   if p.status == "assessed" and p.path in visuals and visuals[p.path].heads is not None
                   and visuals[p.path].heads.embedding is not None]
            if emb:
                embeddings[side] = torch.stack(emb).float().numpy()
    for side, p in (("before", before), ("after", after)):
        if p.is_file():
            for name, img in _report_images(reports[side], p).items():
                images[(side, name)] = img
    sv = same_vehicle_check(reports["before"], reports["after"], embeddings.get("before"), embeddings.get("after"),
                            distance, threshold)
    result = compare_cases(reports["before"], reports["after"], str(before), str(after), sv)
    paths = write_compare(result, images, out)
    if json_out:
        emit_json(result.model_dump(mode="json"))
    console.print(f"[b]{esc(result.verdict)}[/b]", highlight=False)
    for r in result.parts:
        if r.status in ("new", "changed", "not comparable"):
            console.print(f"  {esc(r.part)}: {r.status}: {esc(r.reason)}", highlight=False)
    console.print(f"same vehicle: {esc(sv.verdict)} ({esc(sv.method)})", highlight=False)
    console.print(f"comparison: {esc(paths['html'])} (and {paths['json'].name})", highlight=False)
    if any(rep.summary.failed for rep in reports.values()):
        raise typer.Exit(1)
