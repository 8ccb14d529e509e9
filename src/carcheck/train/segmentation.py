"""Trainer for part / damage segmentation (independent or joint heads).

Recipe (Ma et al., section II-C): the paper's augmentations through albumentations; AdamW
with linear warm-up and cosine decay; joint loss ``(1 - λ) L_parts + λ L_damage`` with
λ = 0.5, realised by alternating one batch of each task (each dataset labels only its own
task) and weighting each task's loss. Frozen backbone under bf16 autocast where the hardware runs it
natively (precision ``auto``), decoder and heads trainable, and with ``unfreeze`` N the model's own copy of the
backbone's last N stages (frozen BN statistics, ``backbone_lr_mult`` x the learning rate). Best-on-validation mean mIoU kept as
``best.safetensors`` + ``best.json``. The epochs, ``last.pt`` (explicit resume), best-on-validation and
``metrics.jsonl`` are :mod:`carcheck.train.engine`'s; the augmentations draw from seeded generators that
the checkpoint holds, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from ..data.coco_dataset import CocoSegmentationDataset
from ..data.labels import LabelRow, assign_splits
from ..data.taxonomy import get_taxonomy
from ..evaluate.metrics import confusion_matrix, miou
from ..models.runtime import use_bf16
from ..models.backbone import EfficientNetLiteBackbone
from ..models.segmentation import CarSegmenter
from .engine import MAY_DIFFER, fit, start_run
from .losses import segmentation_loss

__all__ = ["TaskSpec", "SegTrainConfig", "train_segmentation", "paper_augmentations", "preload", "median_frequency_weights",
           "param_groups", "warm_start"]


@dataclass
class TaskSpec:
    """One segmentation task: head name, target taxonomy, train COCO files, optional val files.

    When ``val`` is empty, ``val_fraction`` of the training images (seeded) is held out.
    """

    name: str
    taxonomy: str
    train: list[str]
    val: list[str] = field(default_factory=list)
    weight: float = 0.5


@dataclass
class SegTrainConfig:
    """Settings of one segmentation run (saved as ``config.json`` in the run folder).

    Attributes:
        tasks: one :class:`TaskSpec` per head (two: the joint model).
        out: run folder (one that holds ``last.pt`` is continued only with ``resume=True``).
        epochs: length of the run and of the cosine schedule.
        batch_size / size: batch and square crop size (px) of training images (validation images
            are resized to ``size`` px on the longer side).
        lr / weight_decay / warmup_epochs: AdamW, linear warm-up (epochs), then cosine decay.
        loss: :data:`~carcheck.train.losses.LOSSES` name, e.g. ``ce+dice``.
        class_weights: median-frequency class weights in CE / focal.
        val_fraction: held-out share of a task's images when it has no ``val`` files.
        seed: seeds the split, the weights, the batch order and the augmentations.
        precision: ``auto`` | ``fp32`` | ``bf16`` (:func:`~carcheck.models.runtime.resolve_precision`).
        threads: torch threads. channels / decoder: decoder width and kind (``fpn`` or ``aspp``).
        device: ``cpu`` or ``cuda``. workers: data-loader processes (part of the result: each
            worker draws its own augmentations).
        max_steps_per_epoch: cap on the optimiser steps of one epoch (None: every batch).
        load_size: longer side (px) the training images are resized to before the random zoom and
            crop (None: ``1.15 * size``); e.g. 640 with ``size`` 512 keeps CarDD's native resolution.
        val_size: longer side (px) of validation images (None: ``size``).
        scale: random zoom range of the training augmentation (multi-scale training).
        unfreeze: 0 (frozen backbone) or the number of last backbone stages fine-tuned as the
            model's own copy (:class:`~carcheck.models.segmentation.BackboneTail`).
        backbone_lr_mult: learning-rate factor of those fine-tuned stages (pretrained weights move
            slower than the new decoder).
        backbone: the ImageNet-pretrained EfficientNet-Lite variant under the decoder (``lite0``, the shared
            pass of the assessment, or ``lite1`` / ``lite2``: issue 26's backbone choice by measurement; a
            model on another variant than the shared pass cannot share its features).
        init: a ``.safetensors`` file of a trained model of the same design (decoder, heads, fine-tuned
            stages; e.g. a shipped weight file) to start from instead of random decoder weights (a
            warm start; loaded once at the start of a run, never on resume, which continues ``last.pt``).
            Tensors are cast to float32; a key or shape that does not fit raises ``ValueError``.
    """

    tasks: list[TaskSpec]
    out: str = "runs/segmentation"
    epochs: int = 20
    batch_size: int = 8
    size: int = 384
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "ce+dice"
    class_weights: bool = False
    val_fraction: float = 0.1
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16 (carcheck.models.runtime.resolve_precision)
    threads: int = 2
    channels: int = 96
    decoder: str = "fpn"
    device: str = "cpu"
    workers: int = 0
    max_steps_per_epoch: int | None = None
    load_size: int | None = None
    val_size: int | None = None
    scale: tuple[float, float] = (0.75, 1.25)
    unfreeze: int = 0
    backbone_lr_mult: float = 0.1
    init: str | None = None
    backbone: str = "lite0"


def paper_augmentations(size: int, scale: tuple[float, float] = (0.75, 1.25)) -> A.Compose:
    """Ma et al. section II-C augmentations (flip is done separately, see :class:`_AugmentedSet`):
    shift/scale, random crop, Gaussian noise, four-point perspective; one of CLAHE / brightness /
    gamma; one of sharpen / blur / motion blur; one of contrast / HSV shift.

    ``scale``: the random zoom range (a wide one, e.g. ``(0.5, 1.5)``, is CarDD's multi-scale
    training, Wang et al. section V)."""
    return A.Compose([
        A.Affine(scale=tuple(scale), translate_percent=(-0.1, 0.1), p=0.7, border_mode=cv2.BORDER_CONSTANT,
                 fill=0, fill_mask=255),
        A.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255),
        A.RandomCrop(size, size),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
        A.Perspective(scale=(0.02, 0.06), p=0.3, fill=0, fill_mask=255),
        A.OneOf([A.CLAHE(p=1), A.RandomBrightnessContrast(contrast_limit=0, p=1), A.RandomGamma(p=1)], p=0.8),
        A.OneOf([A.Sharpen(p=1), A.Blur(blur_limit=3, p=1), A.MotionBlur(blur_limit=3, p=1)], p=0.8),
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0, p=1), A.HueSaturationValue(p=1)], p=0.8),
    ])


def _resize_longest(image: np.ndarray, mask: np.ndarray | None, longest: int):
    h, w = image.shape[:2]
    s = longest / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    m = None if mask is None else cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return img, m


def preload(ds: CocoSegmentationDataset, indices: Sequence[int], longest: int,
            track: Callable = lambda it, **k: it) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode and rasterise once: ``[(image HxWx3 uint8, mask HxW uint8)]`` resized so the
    longer side is ``longest`` px (masks with nearest neighbour)."""
    out = []
    for i in track(indices, description=f"loading {len(indices)} images"):
        img, m, _ = ds.load(i)
        out.append(_resize_longest(img, m, longest))
    return out


class _AugmentedSet(Dataset):
    """Preloaded ``(image, mask)`` items; training adds the flip (Python's ``random``) and the paper's
    augmentations, drawn from the set's own generators ``np_rng`` / ``py_rng`` (albumentations
    would otherwise seed itself from OS entropy: not reproducible, not resumable). In a data-loader
    worker process, :func:`_seed_worker` reseeds them from the worker's seed."""

    def __init__(self, items, size: int, flip_perm: list[int], train: bool, seed: int = 0,
                 scale: tuple[float, float] = (0.75, 1.25)) -> None:
        self.items, self.size, self.train = items, size, train
        self.lut = np.array(flip_perm + [255] * (256 - len(flip_perm)), dtype=np.uint8)
        self.lut[255] = 255
        self.aug = paper_augmentations(size, scale) if train else None
        self.np_rng, self.py_rng = np.random.default_rng(seed), random.Random(seed)
        if self.aug is not None:
            self.aug.set_random_state(self.np_rng, self.py_rng)

    def reseed(self, seed: int) -> None:
        """Fresh augmentation generators from ``seed``."""
        self.np_rng, self.py_rng = np.random.default_rng(seed), random.Random(seed)
        if self.aug is not None:
            self.aug.set_random_state(self.np_rng, self.py_rng)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        img, m = self.items[i]
        if self.train:
            if random.random() < 0.5:  # horizontal flip swaps the car's own left/right labels
                img, m = img[:, ::-1].copy(), self.lut[m[:, ::-1]]
            r = self.aug(image=img, mask=m)
            img, m = r["image"], r["mask"]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        return x, torch.from_numpy(m.astype(np.int64))


def median_frequency_weights(masks: Sequence[np.ndarray], num_classes: int, clip: tuple[float, float] = (0.1, 10.0)) -> torch.Tensor:
    """Median-frequency class weights (Eigen & Fergus, ICCV 2015): ``median(f) / f_c`` with
    ``f_c`` the pixel frequency of class ``c`` over the masks; absent classes get the upper clip.

    Returns:
        ``float32`` tensor ``(num_classes,)``.
    """
    counts = np.zeros(num_classes, np.float64)
    for m in masks:
        counts += np.bincount(m[m != 255].ravel(), minlength=num_classes)[:num_classes]
    freq = counts / max(1.0, counts.sum())
    med = np.median(freq[freq > 0]) if (freq > 0).any() else 1.0
    w = np.where(freq > 0, med / np.maximum(freq, 1e-12), clip[1])
    return torch.tensor(np.clip(w, *clip), dtype=torch.float32)


def param_groups(model: CarSegmenter, cfg: SegTrainConfig) -> list[dict]:
    """AdamW parameter groups: decoder and heads at ``cfg.lr``; a fine-tuned backbone copy
    (``model.tail``, :class:`~carcheck.models.segmentation.BackboneTail`) at ``cfg.lr * cfg.backbone_lr_mult``
    (pretrained weights move slower than the new decoder). Frozen parameters are left out."""
    tail = [p for n, p in model.named_parameters() if n.startswith("tail.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("tail.") and p.requires_grad]
    return [{"params": rest}] + ([{"params": tail, "lr": cfg.lr * cfg.backbone_lr_mult}] if tail else [])


def warm_start(model: CarSegmenter, path: str | Path) -> None:
    """Load a trained model's decoder, heads and fine-tuned stages (a ``.safetensors`` file as
    :func:`train_segmentation` or a shipped weight file writes them) into ``model``, cast to float32.

    Raises:
        ValueError: the file lacks a trainable tensor of ``model``, has one it lacks, or a shape differs
            (names the first keys), e.g. another decoder width, head size or ``unfreeze``.
    """
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(path)).items()}
    own = model.trainable_state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                         f"other shape {shapes[:3]})")
    model.load_state_dict(state, strict=False)


def _seed_worker(worker_id: int) -> None:
    """Data-loader ``worker_init_fn``: each worker's augmentation generators from its own seed
    (``base_seed + worker_id``, the base drawn from the loader's generator every epoch)."""
    info = torch.utils.data.get_worker_info()
    info.dataset.reseed(info.seed % 2**63)


def _holdout(ds: CocoSegmentationDataset, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train indices, val indices)``: ``fraction`` of the images held out for validation by the
    one seeded splitter, :func:`~carcheck.data.labels.assign_splits` (one stratum, no test split;
    files are ordered by path before the seeded shuffle, so the split depends only on the file list
    and the seed).

    Raises:
        ValueError: the held-out or the training part would be empty (fewer than 3 images).
    """
    rows = [LabelRow(p, "") for p in ds.image_paths()]
    splits = [r.split for r in assign_splits(rows, (1 - fraction, fraction, 0.0), seed=seed, strata=())]
    tr = [i for i, s in enumerate(splits) if s == "train"]
    va = [i for i, s in enumerate(splits) if s == "val"]
    if not tr or not va:
        raise ValueError(f"{len(rows)} images: too few to hold out a validation fraction of {fraction}; "
                         f"give the task a VAL_JSON")
    return tr, va


@torch.no_grad()
def _validate(model: CarSegmenter, loader, task: str, n_cls: int, bf16: bool, device: str = "cpu") -> dict:
    model.eval()
    cm = np.zeros((n_cls, n_cls), dtype=np.int64)
    dev = torch.device(device)
    for x, y in loader:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x.to(dev).contiguous(memory_format=torch.channels_last), tasks=[task])[task]
        cm += confusion_matrix(logits.argmax(1).cpu(), y, n_cls)
    model.train()
    return {"miou": miou(cm), "miou_no_bg": miou(cm, with_background=False)}


def train_segmentation(cfg: SegTrainConfig, track: Callable = lambda it, **k: it, log: Callable = print,
                       resume: bool = False) -> Path:
    """Train (or resume) a segmentation model; returns the run folder.

    The folder holds ``config.json``, ``metrics.jsonl``, ``last.pt`` (resume state, local
    only), ``best.safetensors`` (decoder + heads, and the fine-tuned stages with ``unfreeze``, of the best validation epoch, by the mean of
    the tasks' mIoU) and ``best.json`` (its epoch and metrics).

    Args:
        cfg: the run's settings.
        track: progress wrapper ``track(iterable, description=...)``.
        log: progress lines.
        resume: continue the run in ``cfg.out`` from its ``last.pt``; every field but ``out`` and
            ``threads`` must equal the stored ``config.json`` (:func:`~carcheck.train.engine.start_run`):
            ``epochs`` and ``max_steps_per_epoch`` set the cosine schedule's length, ``workers`` which
            process draws which augmentation.
    Raises:
        ValueError: a task without VAL_JSON has fewer than 3 images.
        RunFolderError: ``cfg.out`` holds ``last.pt`` and ``resume`` is False.
        ConfigChangedError: ``resume`` with a changed config (names the fields).
    """
    out = start_run(cfg, resume, MAY_DIFFER)
    bf16 = use_bf16(cfg.precision, cfg.device)

    heads, train_loaders, val_loaders, class_w, generators = {}, {}, {}, {}, {}
    for k, t in enumerate(cfg.tasks):
        tax = get_taxonomy(t.taxonomy)
        heads[t.name] = tax.num_classes + 1
        ds = CocoSegmentationDataset(t.train, t.taxonomy)
        if t.val:
            tr_idx, va_ds = list(range(len(ds))), CocoSegmentationDataset(t.val, t.taxonomy)
            va_idx = list(range(len(va_ds)))
        else:
            tr_idx, va_idx = _holdout(ds, cfg.val_fraction, cfg.seed)
            va_ds = ds
        longest = cfg.load_size or int(cfg.size * 1.15)
        tr = preload(ds, tr_idx, longest, track)
        va = preload(va_ds, va_idx, cfg.val_size or cfg.size, track)
        if cfg.class_weights:
            class_w[t.name] = median_frequency_weights([m for _, m in tr], tax.num_classes + 1)
            log(f"task {t.name}: class weights {[round(float(v), 2) for v in class_w[t.name]]}")
        perm = tax.flip_permutation()
        g = torch.Generator().manual_seed(cfg.seed)
        train_set = _AugmentedSet(tr, cfg.size, perm, True, seed=cfg.seed + k, scale=tuple(cfg.scale))
        train_loaders[t.name] = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                           generator=g, num_workers=cfg.workers,
                                           worker_init_fn=_seed_worker if cfg.workers > 0 else None)
        generators.update({f"{t.name}/loader": g, f"{t.name}/aug_np": train_set.np_rng,
                           f"{t.name}/aug_py": train_set.py_rng})
        val_loaders[t.name] = DataLoader(_AugmentedSet(va, cfg.size, perm, False), batch_size=1)
        log(f"task {t.name}: {len(tr)} train / {len(va)} val images, {heads[t.name]} classes")

    dev = torch.device(cfg.device)
    model = CarSegmenter(heads, backbone=EfficientNetLiteBackbone(cfg.backbone), channels=cfg.channels,
                         decoder=cfg.decoder, unfreeze=cfg.unfreeze).to(dev, memory_format=torch.channels_last)
    if cfg.init and not resume:
        warm_start(model, cfg.init)
        log(f"warm start from {cfg.init}")
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = sum(len(l) for l in train_loaders.values())
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warmup, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warmup)),
    ], milestones=[warmup])
    weights = {t.name: t.weight for t in cfg.tasks}
    if len(cfg.tasks) == 1:
        weights = {cfg.tasks[0].name: 1.0}

    def train_one_epoch(epoch: int) -> dict:
        model.train()
        iters = {k: iter(v) for k, v in train_loaders.items()}
        order = [k for k, v in train_loaders.items() for _ in range(len(v))]
        random.Random(cfg.seed + epoch).shuffle(order)
        order = order[:steps_per_epoch]
        losses = {k: [] for k in train_loaders}
        for task in track(order, description=f"epoch {epoch + 1}/{cfg.epochs}"):
            x, y = next(iters[task])
            x, y = x.to(dev), y.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x.contiguous(memory_format=torch.channels_last), tasks=[task])[task]
            cw = class_w.get(task)
            loss = weights[task] * segmentation_loss(cfg.loss, logits, y, None if cw is None else cw.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses[task].append(float(loss.detach()))
            done = sum(len(v) for v in losses.values())
            if done % 50 == 0:  # a line now and then for runs logged to a file (the progress bar needs a terminal)
                log(f"epoch {epoch + 1} step {done}/{len(order)} loss {np.mean(losses[task][-50:]):.4f}")
        return {"train_loss": {k: float(np.mean(v)) if v else None for k, v in losses.items()}}

    def validate(epoch: int) -> dict:
        val = {k: _validate(model, val_loaders[k], k, heads[k], bf16, cfg.device) for k in val_loaders}
        return {"val": val, "score": float(np.mean([v["miou"] for v in val.values()]))}

    def on_best(epoch: int, rec: dict) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()},
                  str(out / "best.safetensors"),
                  metadata={"heads": json.dumps(heads), "channels": str(cfg.channels), "decoder": cfg.decoder,
                            "unfreeze": str(cfg.unfreeze), "backbone": cfg.backbone,
                            "taxonomies": json.dumps({t.name: t.taxonomy for t in cfg.tasks})})
        (out / "best.json").write_text(json.dumps(rec, indent=2))

    fit(out, model=_Trainable(model), optimizer=opt, scheduler=sched, train_one_epoch=train_one_epoch,
        validate=validate, epochs=cfg.epochs, monitor="score", mode="max", on_best=on_best,
        generators=generators, resume=resume, log=log)
    return out


class _Trainable:
    """What a segmentation checkpoint holds: the decoder, heads and any fine-tuned tail (the frozen backbone comes
    from its package)."""

    def __init__(self, model: CarSegmenter) -> None:
        self.model = model

    def state_dict(self) -> dict:
        return self.model.trainable_state_dict()

    def load_state_dict(self, state: dict) -> None:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            raise RuntimeError(f"last.pt does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
