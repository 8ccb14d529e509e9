"""Trainer for part / damage segmentation (independent or joint heads).

Recipe (Ma et al., section II-C): the paper's augmentations through albumentations; AdamW
with linear warm-up and cosine decay; joint loss ``(1 - λ) L_parts + λ L_damage`` with
λ = 0.5, realised by alternating one batch of each task (each dataset labels only its own
task) and weighting each task's loss. Frozen backbone under bf16 autocast where the hardware runs it natively (precision ``auto``), decoder and heads
trainable. Checkpoint every epoch (``last.pt``, resumable), best-on-validation mIoU kept as
``best.safetensors``; metrics appended to ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from ..models.runtime import use_bf16
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from ..data.coco import CocoSegmentationDataset
from ..data.taxonomy import get_taxonomy
from ..evaluate.metrics import confusion_matrix, miou
from ..models.segmentation import CarSegmenter
from .losses import segmentation_loss

__all__ = ["TaskSpec", "SegTrainConfig", "train_segmentation", "paper_augmentations", "preload", "median_frequency_weights"]


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


def paper_augmentations(size: int) -> A.Compose:
    """Ma et al. section II-C augmentations (flip is done separately, see :class:`_AugmentedSet`):
    shift/scale, random crop, Gaussian noise, four-point perspective; one of CLAHE / brightness /
    gamma; one of sharpen / blur / motion blur; one of contrast / HSV shift."""
    return A.Compose([
        A.Affine(scale=(0.75, 1.25), translate_percent=(-0.1, 0.1), p=0.7, border_mode=cv2.BORDER_CONSTANT,
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
    def __init__(self, items, size: int, flip_perm: list[int], train: bool) -> None:
        self.items, self.size, self.train = items, size, train
        self.lut = np.array(flip_perm + [255] * (256 - len(flip_perm)), dtype=np.uint8)
        self.lut[255] = 255
        self.aug = paper_augmentations(size) if train else None

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


def _split(n: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    k = max(1, int(round(n * frac)))
    return sorted(idx[k:]), sorted(idx[:k])


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


def train_segmentation(cfg: SegTrainConfig, track: Callable = lambda it, **k: it, log: Callable = print) -> Path:
    """Train (or resume) a segmentation model; returns the run folder.

    The folder holds ``config.json``, ``metrics.jsonl``, ``last.pt`` (resume state, local
    only), ``best.safetensors`` (decoder + heads of the best validation epoch, by the mean of
    the tasks' mIoU) and ``best.json`` (its epoch and metrics).
    """
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    bf16 = use_bf16(cfg.precision, cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "precision_resolved": "bf16" if bf16 else "fp32"},
                                                 indent=2))

    heads, train_loaders, val_loaders, class_w = {}, {}, {}, {}
    for t in cfg.tasks:
        tax = get_taxonomy(t.taxonomy)
        heads[t.name] = tax.num_classes + 1
        ds = CocoSegmentationDataset(t.train, t.taxonomy)
        if t.val:
            tr_idx, va_ds, va_idx = list(range(len(ds))), CocoSegmentationDataset(t.val, t.taxonomy), None
            va_idx = list(range(len(va_ds)))
        else:
            tr_idx, va_idx = _split(len(ds), cfg.val_fraction, cfg.seed)
            va_ds = ds
        longest = int(cfg.size * 1.15)
        tr = preload(ds, tr_idx, longest, track)
        va = preload(va_ds, va_idx, cfg.size, track)
        if cfg.class_weights:
            class_w[t.name] = median_frequency_weights([m for _, m in tr], tax.num_classes + 1)
            log(f"task {t.name}: class weights {[round(float(v), 2) for v in class_w[t.name]]}")
        perm = tax.flip_permutation()
        g = torch.Generator().manual_seed(cfg.seed)
        train_loaders[t.name] = DataLoader(_AugmentedSet(tr, cfg.size, perm, True), batch_size=cfg.batch_size,
                                           shuffle=True, drop_last=True, generator=g, num_workers=cfg.workers,
                                           persistent_workers=cfg.workers > 0)
        val_loaders[t.name] = DataLoader(_AugmentedSet(va, cfg.size, perm, False), batch_size=1)
        log(f"task {t.name}: {len(tr)} train / {len(va)} val images, {heads[t.name]} classes")

    dev = torch.device(cfg.device)
    model = CarSegmenter(heads, channels=cfg.channels, decoder=cfg.decoder).to(dev, memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
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

    start, best = 0, -1.0
    last = out / "last.pt"
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.to(dev) for k, v in state["model"].items()}, strict=False)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, best = int(state["epoch"]) + 1, float(state["best"])
        log(f"resumed from {last} at epoch {start}")

    model.train()
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
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
        val = {k: _validate(model, val_loaders[k], k, heads[k], bf16, cfg.device) for k in val_loaders}
        score = float(np.mean([v["miou"] for v in val.values()]))
        rec = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 1), "lr": sched.get_last_lr()[0],
               "train_loss": {k: float(np.mean(v)) if v else None for k, v in losses.items()}, "val": val,
               "score": score}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        log(json.dumps(rec))
        if score > best:
            best = score
            save_file({k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()},
                      str(out / "best.safetensors"),
                      metadata={"heads": json.dumps(heads), "channels": str(cfg.channels), "decoder": cfg.decoder,
                                "taxonomies": json.dumps({t.name: t.taxonomy for t in cfg.tasks})})
            (out / "best.json").write_text(json.dumps(rec, indent=2))
        torch.save({"model": model.trainable_state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch, "best": best}, last)
    return out
