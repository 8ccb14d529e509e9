"""``carcheck evaluate segmentation``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..data.coco import find_coco_files
from ..evaluate.metrics import bootstrap_miou_difference
from ..evaluate.segmentation import evaluate_segmentation
from ..models.inference import DEFAULT_SEGMENTERS, load_segmenter, load_segmenters
from ._common import console, emit_json, track

app = typer.Typer(help="Evaluate carcheck models on held-out data.", no_args_is_help=True)


def _annotation_files(data: Path) -> list[str]:
    if data.is_file():
        return [str(data)]
    files = find_coco_files(data)
    if not files:
        raise typer.BadParameter(f"{data}: no COCO annotation file found")
    return [str(f) for f in files]


@app.command("segmentation")
def segmentation(
    data: Path = typer.Argument(..., help="COCO annotation file or a dataset folder in the same format as ../shared/data."),
    task: str = typer.Option("parts", help="Head to evaluate (parts or damage)."),
    taxonomy: Optional[str] = typer.Option(None, help="Ground-truth taxonomy (default: the head's; e.g. damage_binary)."),
    weights: Optional[List[Path]] = typer.Option(None, help="Model weights (.safetensors), repeatable; default: the "
                                                 "shipped models (first file with the head serves it)."),
    compare: Optional[Path] = typer.Option(None, help="Second model: bootstrap 95% CI of the mIoU difference."),
    replicates: int = typer.Option(5000, help="Bootstrap replicates (over images)."),
    instances: bool = typer.Option(False, help="Also COCO box/mask AP of connected components (damage)."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics as JSON on stdout."),
) -> None:
    """Per-class IoU, mIoU (with/without background), confusion matrix; optional instance AP
    and a bootstrap comparison of two models."""
    files = _annotation_files(data)
    weights = weights or list(DEFAULT_SEGMENTERS)
    model = load_segmenters(weights)
    res = evaluate_segmentation(model, files, task, taxonomy, instances=instances, track=track,
                                on_error=lambda m: console.print(f"[yellow]{m}[/]"))
    out = res.to_dict()
    out["weights"] = [str(w) for w in weights]
    out["data"] = files
    if compare is not None:
        other = evaluate_segmentation(load_segmenter(compare), files, task, taxonomy, track=track)
        out["bootstrap_vs"] = {"other": str(compare), "miou_other": other.to_dict()["miou"],
                               **bootstrap_miou_difference(res.per_image, other.per_image, replicates)}
    if json_out:
        emit_json(out)
        return
    t = Table(title=f"{task} on {data} ({out['images']} images, taxonomy {out['taxonomy']})", title_justify="left")
    t.add_column("class")
    t.add_column("IoU", justify="right")
    for c, v in out["iou"].items():
        t.add_row(c, "-" if v is None else f"{v:.3f}")
    t.add_row("[b]mIoU[/]", f"[b]{out['miou']:.3f}[/]")
    t.add_row("[b]mIoU (no background)[/]", f"[b]{out['miou_no_bg']:.3f}[/]")
    console.print(t)
    if out["instance_ap"]:
        for kind in ("bbox", "segm"):
            console.print(f"{kind} AP: " + ", ".join(f"{k} {v:.3f}" for k, v in out["instance_ap"][kind].items()))
    if "bootstrap_vs" in out:
        b = out["bootstrap_vs"]
        console.print(f"mIoU difference vs {compare}: {b['diff']:+.4f}, 95% CI [{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}]")
