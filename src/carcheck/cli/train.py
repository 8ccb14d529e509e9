"""``carcheck train segmentation``."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from ..data.taxonomy import TaxonomyError, get_taxonomy
from ..train.losses import LOSSES
from ..train.segmentation import SegTrainConfig, TaskSpec, train_segmentation
from ._common import console, track

app = typer.Typer(help="Train carcheck models on your own data.", no_args_is_help=True)


def _parse_task(spec: str) -> TaskSpec:
    """``NAME:TAXONOMY:TRAIN_JSON[,TRAIN_JSON...][:VAL_JSON[,VAL_JSON...]]``."""
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise typer.BadParameter(f"{spec!r}: expected NAME:TAXONOMY:TRAIN_JSON[:VAL_JSON]")
    name, tax = parts[0], parts[1]
    try:
        get_taxonomy(tax)
    except TaxonomyError as e:
        raise typer.BadParameter(str(e)) from None
    train = parts[2].split(",")
    val = parts[3].split(",") if len(parts) == 4 and parts[3] else []
    for p in train + val:
        if not Path(p).is_file():
            raise typer.BadParameter(f"{p}: no such annotation file")
    return TaskSpec(name, tax, train, val)


@app.command("segmentation")
def segmentation(
    task: List[str] = typer.Option(..., "--task", help="NAME:TAXONOMY:TRAIN_JSON[:VAL_JSON], repeatable; "
                                   "two tasks train the joint model (shared decoder, one head each)."),
    out: Path = typer.Option(Path("runs/segmentation"), help="Run folder (resumes when it holds last.pt)."),
    epochs: int = typer.Option(20), batch_size: int = typer.Option(8), size: int = typer.Option(384, help="Crop size, px."),
    lr: float = typer.Option(2e-3), loss: str = typer.Option("ce+dice", help=f"One of {LOSSES}."),
    lam: float = typer.Option(0.5, "--lambda", help="Joint loss weight λ of the second task: (1-λ)·L1 + λ·L2."),
    val_fraction: float = typer.Option(0.1, help="Held-out fraction when a task has no VAL_JSON."),
    class_weights: bool = typer.Option(False, help="Median-frequency class weights in CE / focal."),
    seed: int = typer.Option(0), threads: int = typer.Option(2), no_bf16: bool = typer.Option(False, "--no-bf16"),
) -> None:
    """Train a segmentation model (frozen EfficientNet-Lite0 backbone, FPN decoder, one head per task)."""
    if loss not in LOSSES:
        raise typer.BadParameter(f"--loss must be one of {LOSSES}")
    specs = [_parse_task(t) for t in task]
    if len(specs) == 2:
        specs[0].weight, specs[1].weight = 1 - lam, lam
    cfg = SegTrainConfig(tasks=specs, out=str(out), epochs=epochs, batch_size=batch_size, size=size, lr=lr, loss=loss,
                         val_fraction=val_fraction, class_weights=class_weights, seed=seed, threads=threads, bf16=not no_bf16)
    run = train_segmentation(cfg, track=track, log=console.print)
    console.print(f"[green]done[/]: best weights in {run / 'best.safetensors'}")
