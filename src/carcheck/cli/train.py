"""``carcheck train segmentation | classifier | verification | standalone | instance-head``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import PRECISION_HELP, check_precision, console, track

#: Segmentation losses (kept in step with :data:`carcheck.train.losses.LOSSES`, a test checks it;
#: listed here so that ``--help`` does not import torch).
SEG_LOSSES = ("ce", "focal", "dice", "ce+dice", "focal+dice")

app = typer.Typer(help="Train carcheck models on your own data.", no_args_is_help=True)


def _parse_task(spec: str):
    """``NAME:TAXONOMY:TRAIN_JSON[,TRAIN_JSON...][:VAL_JSON[,VAL_JSON...]]`` -> a ``TaskSpec``.

    Each file may also be a YOLO-seg folder (with ``data.yaml``) or its yaml, optionally
    ``@SPLIT``: its ``train`` split for TRAIN and ``val`` for VAL unless a split is named,
    converted to COCO once (:func:`carcheck.data.yolo.annotation_file`)."""
    from ..data.images import ImageLoadError
    from ..data.taxonomy import TaxonomyError, get_taxonomy
    from ..data.yolo import YoloFormatError, annotation_file
    from ..train.segmentation import TaskSpec

    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise typer.BadParameter(f"{spec!r}: expected NAME:TAXONOMY:TRAIN_JSON[:VAL_JSON]")
    name, tax = parts[0], parts[1]
    try:
        get_taxonomy(tax)
    except TaxonomyError as e:
        raise typer.BadParameter(str(e)) from None
    try:
        train = [str(annotation_file(p, "train")) for p in parts[2].split(",")]
        val = [str(annotation_file(p, "val")) for p in parts[3].split(",")] if len(parts) == 4 and parts[3] else []
    except (FileNotFoundError, KeyError, YoloFormatError, ImageLoadError) as e:
        raise typer.BadParameter(str(e).strip("'\"")) from None
    return TaskSpec(name, tax, train, val)


#: ``--resume`` help text, shared by every trainer.
RESUME_HELP = ("Continue the run in --out from its last.pt (refused when a setting that changes the result differs "
               "from the folder's config.json). Without it, a folder holding last.pt is refused.")


def _run_trainer(train, cfg, what: str, resume: bool) -> None:
    """Run a trainer; a data, taxonomy or run-folder problem (a folder holding last.pt without
    ``--resume``, a changed config with it) ends with its message and exit code 2."""
    from rich.markup import escape

    from ..data.taxonomy import TaxonomyError

    try:
        run = train(cfg, track=track, log=console.print, resume=resume)
    except (ValueError, TaxonomyError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2)
    console.print(f"[green]done[/]: best {what} in {run / 'best.safetensors'}")


@app.command("segmentation")
def segmentation(
    task: List[str] = typer.Option(..., "--task", help="NAME:TAXONOMY:TRAIN_JSON[:VAL_JSON], repeatable; "
                                   "two tasks train the joint model (shared decoder, one head each)."),
    out: Path = typer.Option(Path("runs/segmentation"), help="Run folder (see --resume)."),
    epochs: int = typer.Option(20), batch_size: int = typer.Option(8), size: int = typer.Option(384, help="Crop size, px."),
    lr: float = typer.Option(2e-3), loss: str = typer.Option("ce+dice", help=f"One of {SEG_LOSSES}."),
    lam: float = typer.Option(0.5, "--lambda", help="Joint loss weight λ of the second task: (1-λ)·L1 + λ·L2."),
    val_fraction: float = typer.Option(0.1, help="Held-out fraction when a task has no VAL_JSON."),
    class_weights: bool = typer.Option(False, help="Median-frequency class weights in CE / focal."),
    seed: int = typer.Option(0), threads: int = typer.Option(2),
    precision: str = typer.Option("auto", callback=check_precision, help=PRECISION_HELP),
    decoder: str = typer.Option("fpn", help="fpn (semantic FPN) or aspp (DeepLabV3+-style ASPP + low-level skip)."),
    device: str = typer.Option("cpu", help="cpu or cuda."), workers: int = typer.Option(0, help="Data-loader processes."),
    channels: int = typer.Option(96, help="Decoder width."),
    load_size: Optional[int] = typer.Option(None, help="Longer side (px) of training images before zoom and crop "
                                            "(default 1.15 x --size)."),
    val_size: Optional[int] = typer.Option(None, help="Longer side (px) of validation images (default --size)."),
    scale: str = typer.Option("0.75,1.25", help="Random zoom range LO,HI (multi-scale training)."),
    max_steps_per_epoch: Optional[int] = typer.Option(None, help="Cap on optimiser steps per epoch (default: every batch)."),
    unfreeze: int = typer.Option(0, help="Fine-tune the backbone's last N stages (1-3) as the model's own copy "
                                 "(0: frozen backbone)."),
    backbone_lr_mult: float = typer.Option(0.1, help="Learning-rate factor of the fine-tuned stages."),
    init: Optional[Path] = typer.Option(None, help="Warm start: a .safetensors file of a trained model of the same "
                                        "design (e.g. a shipped weight file)."),
    backbone: str = typer.Option("lite0", help="ImageNet EfficientNet-Lite variant under the decoder: lite0 (the "
                                 "assessment's shared pass), lite1 or lite2 (a model of its own, for comparison)."),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
) -> None:
    """Train a segmentation model (frozen EfficientNet-Lite0 backbone by default, optionally its last stages fine-tuned as the
    model's own copy with --unfreeze; FPN or ASPP decoder, one head per task).
    Annotations: COCO JSON files or YOLO-seg folders (e.g. CarDD: ``damage:cardd_damage:data/cardd:data/cardd``)."""
    from ..train.segmentation import SegTrainConfig, train_segmentation

    if loss not in SEG_LOSSES:
        raise typer.BadParameter(f"--loss must be one of {SEG_LOSSES}")
    if backbone not in ("lite0", "lite1", "lite2"):
        raise typer.BadParameter(f"--backbone {backbone!r}: choose lite0, lite1 or lite2")
    try:
        lo, hi = (float(v) for v in scale.split(","))
    except ValueError:
        raise typer.BadParameter(f"--scale {scale!r}: expected LO,HI, e.g. 0.5,1.5") from None
    if not 0 < lo <= hi:
        raise typer.BadParameter(f"--scale {scale!r}: need 0 < LO <= HI")
    specs = [_parse_task(t) for t in task]
    if len(specs) == 2:
        specs[0].weight, specs[1].weight = 1 - lam, lam
    cfg = SegTrainConfig(tasks=specs, out=str(out), epochs=epochs, batch_size=batch_size, size=size, lr=lr, loss=loss,
                         val_fraction=val_fraction, class_weights=class_weights, seed=seed, threads=threads, precision=precision,
                         decoder=decoder, device=device, workers=workers, channels=channels, load_size=load_size,
                         val_size=val_size, scale=(lo, hi), max_steps_per_epoch=max_steps_per_epoch,
                         unfreeze=unfreeze, backbone_lr_mult=backbone_lr_mult,
                         init=str(init) if init else None, backbone=backbone)
    _run_trainer(train_segmentation, cfg, "weights", resume)


@app.command("classifier")
def classifier(
    data: Path = typer.Option(..., help="Label CSV (file,label[,source,split,group]) or folder-per-class root."),
    task: str = typer.Option(..., help="Task name stored in the head (presence, damaged, severity, socar_state...)."),
    out: Path = typer.Option(Path("runs/classifier"), help="Run folder (see --resume)."),
    taxonomy: Optional[str] = typer.Option(None, help="Labels must be classes of this taxonomy (e.g. socar_state)."),
    map_to: Optional[str] = typer.Option(None, help="Map labels taxonomy -> this one (e.g. socar_defect, socar_dirt)."),
    mode: str = typer.Option("frozen", help="frozen (head on cached pooled features) or finetune (last stage too)."),
    loss: str = typer.Option("focal", help="focal (alpha from class counts) or ce."),
    gamma: float = typer.Option(2.0), weighted_sampling: bool = typer.Option(True),
    epochs: int = typer.Option(60), patience: int = typer.Option(3, help="Early stopping on validation loss."),
    val_loss: str = typer.Option("train", help="Validation loss for early stopping / LR schedule / best epoch: "
                                               "train (the training loss) or ce (cross-entropy)."),
    lr: float = typer.Option(1e-3), batch_size: int = typer.Option(64), hidden: int = typer.Option(256),
    seed: int = typer.Option(0), cache_dir: Path = typer.Option(Path("runs/feature_cache")),
    ood_data: Optional[Path] = typer.Option(None, help="Out-of-distribution photos (CSV/folder) to set the OOD threshold."),
    views: str = typer.Option("full,hflip", help="Frozen mode: training views per photo (full, hflip, lowres, lowres_hflip, vlowres)."),
    device: str = typer.Option("cpu"), threads: int = typer.Option(2),
    precision: str = typer.Option("auto", callback=check_precision, help=PRECISION_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP + " --epochs may change."),
) -> None:
    """Train an image-level classifier head on the shared backbone."""
    from ..train.classifier import ClassifierTrainConfig, train_classifier

    cfg = ClassifierTrainConfig(data=str(data), task=task, out=str(out), taxonomy=taxonomy, map_to=map_to, mode=mode,
                                loss=loss, gamma=gamma, weighted_sampling=weighted_sampling, epochs=epochs,
                                patience=patience, val_loss=val_loss, lr=lr, batch_size=batch_size, hidden=hidden,
                                seed=seed, cache_dir=str(cache_dir), device=device, threads=threads,
                                precision=precision, ood_data=str(ood_data) if ood_data else None,
                                views=tuple(v.strip() for v in views.split(",") if v.strip()))
    _run_trainer(train_classifier, cfg, "head", resume)


@app.command("verification")
def verification(
    data: Path = typer.Option(..., help="Label CSV whose label (or group) is the vehicle identity; source = vehicle type."),
    out: Path = typer.Option(Path("runs/verification")), epochs: int = typer.Option(200),
    patience: int = typer.Option(10), lr: float = typer.Option(1e-3), hard_fraction: float = typer.Option(0.5),
    seed: int = typer.Option(0), cache_dir: Path = typer.Option(Path("runs/feature_cache")),
    mode: str = typer.Option("frozen", help="frozen (cached pooled features) or finetune (last stage too)."),
    device: str = typer.Option("cpu"), threads: int = typer.Option(2),
    precision: str = typer.Option("auto", callback=check_precision, help=PRECISION_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP + " --epochs may change."),
) -> None:
    """Train the Siamese same-vehicle head on the frozen shared features (128-d embeddings, learned
    L1-distance head): the fast baseline. The shipped, fine-tuned re-id model comes from `train standalone`."""
    from ..train.embedding import EmbeddingTrainConfig, train_embedding

    cfg = EmbeddingTrainConfig(data=str(data), out=str(out), epochs=epochs, patience=patience, lr=lr,
                               hard_fraction=hard_fraction, seed=seed, cache_dir=str(cache_dir), threads=threads,
                               mode=mode, device=device, precision=precision)
    _run_trainer(train_embedding, cfg, "head", resume)


@app.command("standalone")
def standalone(
    data: Path = typer.Option(..., help="Label CSV (file,label[,source,split,group]) or folder-per-class root."),
    task: str = typer.Option(..., help="Task name stored in the model (verification, make_model...)."),
    kind: str = typer.Option("embedding", help="embedding (re-id: triplet + ID loss) or classifier."),
    out: Path = typer.Option(Path("runs/standalone"), help="Run folder (see --resume)."),
    height: int = typer.Option(224, help="Input height, px."), width: int = typer.Option(224, help="Input width, px."),
    epochs: int = typer.Option(12), lr: float = typer.Option(4e-4, help="Backbone learning rate (new layers 10x)."),
    batch_size: int = typer.Option(32, help="Classifier batch."),
    ids_per_batch: int = typer.Option(16, help="Embedding batch: identities (P) per batch."),
    photos_per_id: int = typer.Option(2, help="Embedding batch: photos (K) per identity."),
    loss: str = typer.Option("ce", help="Classifier loss: ce (label smoothing 0.1) or focal."),
    seed: int = typer.Option(0), device: str = typer.Option("cpu"), threads: int = typer.Option(2),
    precision: str = typer.Option("auto", callback=check_precision, help=PRECISION_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
) -> None:
    """Fine-tune a whole backbone for one task (its own second pass per photo): the shipped
    verification and make/model models."""
    from ..train.standalone import StandaloneTrainConfig, train_standalone

    cfg = StandaloneTrainConfig(data=str(data), task=task, kind=kind, out=str(out), height=height, width=width,
                                epochs=epochs, lr=lr, batch_size=batch_size, ids_per_batch=ids_per_batch,
                                photos_per_id=photos_per_id, loss=loss, seed=seed, device=device, threads=threads,
                                precision=precision)
    _run_trainer(train_standalone, cfg, "model", resume)


@app.command("standalone-export")
def standalone_export(run: Path = typer.Argument(..., help="A `train standalone` run folder.")) -> None:
    """Write RUN/best.safetensors from the best epoch so far of a standalone run, in progress or stopped (the
    trainer writes the same file when its last epoch ends): ship or measure a long run before it ends."""
    from ..train.standalone import export_run

    try:
        path = export_run(run, log=console.print)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="RUN") from None
    console.print(f"wrote {path}")


@app.command("instance-head")
def instance_head(
    data: Path = typer.Argument(..., help="CarDD YOLO-seg folder with data.yaml (train and valid splits; 640 x 640)."),
    out: Path = typer.Option(Path("runs/instance_head/run"), help="Run folder (see --resume)."),
    cache_dir: Path = typer.Option(Path("runs/instance_head/cache"), help="Cached frozen features (built once, "
                                   "resumable; ~3.7 GB for CarDD train)."),
    epochs: int = typer.Option(12), batch_size: int = typer.Option(16), lr: float = typer.Option(2e-3),
    width: int = typer.Option(64, help="Head trunk width."),
    stop_after: Optional[int] = typer.Option(None, help="End this call after N epochs (continue with --resume)."),
    seed: int = typer.Option(0), threads: int = typer.Option(2),
    resume: bool = typer.Option(False, help=RESUME_HELP),
) -> None:
    """The CenterNet instance head on the frozen shipped CarDD damage network (issue 27): caches the network's
    decoder output for train and valid once, then trains only the head (a checkpoint every epoch)."""
    import json

    import torch

    from ..train.engine import ConfigChangedError, RunFolderError
    from ..train.instances import HeadConfig, cache_split, train_head

    torch.set_num_threads(threads)
    try:
        for split, logits in (("valid", True), ("train", False)):
            meta = cache_dir / f"{split}.json"
            if not (meta.is_file() and json.loads(meta.read_text())["done"] == json.loads(meta.read_text())["n"]):
                cache_split(str(data), split, cache_dir, keep_logits=logits, log=console.print)
        cfg = HeadConfig(out=str(out), cache_dir=str(cache_dir), epochs=epochs, batch=batch_size, lr=lr, width=width,
                         seed=seed, threads=threads)
        train_head(cfg, resume=resume, stop_after=stop_after, log=console.print)
    except (ValueError, FileNotFoundError, KeyError, RunFolderError, ConfigChangedError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        raise typer.Exit(2)
    console.print(f"[green]done[/]: best head in {out / 'best.safetensors'}")
