"""``carcheck export onnx``: the inference networks as ONNX models for the ONNX Runtime engine."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import console, emit_json

app = typer.Typer(help="Export carcheck models for other runtimes.", no_args_is_help=True)


@app.command("onnx")
def onnx(
    out: Path = typer.Option(..., "--out", help="Export folder (created; an earlier export there is replaced)."),
    weights: Optional[List[Path]] = typer.Option(None, help="Segmenter weights (.safetensors), repeatable; default: "
                                                 "the shipped models (first file with a head serves it)."),
    standalone: Optional[List[str]] = typer.Option(None, help="TASK=FILE of a model with its own backbone "
                                                   "(StandaloneNet), repeatable; default: the shipped ones."),
    no_standalone: bool = typer.Option(False, "--no-standalone", help="Export no StandaloneNet models."),
    check: bool = typer.Option(True, help="Compare ONNX Runtime with torch on random inputs of 4 aspect ratios."),
    threads: Optional[int] = typer.Option(None, help="torch/ONNX Runtime threads (default: every core)."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON on stdout."),
) -> None:
    """The shared backbone pass, the segmentation decoders and each StandaloneNet as ONNX models,
    with a manifest.json (opset, sha256 of every source file) that lets the runtime refuse a stale
    export. Nothing is downloaded. Exit code 2 for a missing or unusable weights file."""
    specs: dict[str, Path] = {}
    for s in standalone or []:
        task, sep, file = s.partition("=")
        if not sep or not task or not file:
            raise typer.BadParameter(f"{s!r}: expected TASK=FILE", param_hint="--standalone")
        specs[task] = Path(file)
    for p in [*(weights or []), *specs.values()]:
        if not p.is_file():
            raise typer.BadParameter(f"{p}: no such weights file", param_hint="--weights/--standalone")

    import json

    from ..models.export import export_onnx
    from ..models.inference import DEFAULT_SEGMENTERS
    from ..models.runtime import set_threads

    set_threads(threads)
    try:
        manifest = export_onnx(out, weights or list(DEFAULT_SEGMENTERS),
                               {} if no_standalone else (specs or None), check=check)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--weights/--standalone") from None
    data = json.loads(manifest.read_text())
    if json_out:
        emit_json(data)
        return
    names = [data["backbone"]["file"], data["decoders"]["file"], *(s["file"] for s in data["standalone"].values())]
    console.print(f"exported to {out}: {', '.join(names)} + {manifest.name} (opset {data['opset']}; "
                  f"decoders: {', '.join(data['decoders']['outputs'])})")


@app.command("reviewed")
def reviewed(
    data_dir: Path = typer.Option(Path("carcheck-data"), "--data-dir", help="The service's data dir."),
    out: Path = typer.Option(..., "--out", help="Folder for annotations.json and images/ (created)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="CARCHECK_DATABASE_URL",
                                               help="The service's database (default: SQLite in the data dir)."),
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Only this tenant's cases (default: all)."),
    originals: bool = typer.Option(False, "--originals", help="Export the stored originals instead of the "
                                   "privacy-blurred photos (only where the training data may hold faces and plates)."),
) -> None:
    """Reviewed cases of the service as a COCO dataset for retraining (confirmed, corrected and added
    damage as annotations, rejected predictions under "negatives"); train on it with
    ``carcheck train segmentation --task damage:damage_type:OUT/annotations.json``."""
    from ..serve.review.export import export_coco
    from ..serve.storage import PhotoStore
    from ._common import open_service_db

    factory, tid = open_service_db(data_dir, database_url, tenant)
    with factory() as s:
        try:
            summary = export_coco(s, PhotoStore(data_dir), out, tid, originals=originals)
        except (ValueError, OSError) as e:
            console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
            raise typer.Exit(2)
    console.print(f"exported {summary['cases']} reviewed case(s): {summary['images']} image(s), "
                  f"{summary['annotations_count']} annotation(s), {summary['negatives']} negative(s) -> "
                  f"{summary['annotations']}", highlight=False, markup=False)
