"""One trainer for image-level classifiers on the shared backbone.

Recipe (the make/model paper's, also used by the part-classification paper): cross-entropy or
focal loss (Lin et al., ICCV 2017, eq. 5) with per-class alpha from the class counts
(``alpha_c = N / (C * n_c)``) and gamma = 2; class-weighted sampling; Adam(W);
``ReduceLROnPlateau`` on the validation loss; early stopping after ``patience`` epochs without a
better validation loss; best kept as ``best.safetensors`` with its
:class:`~carcheck.models.classifier.HeadInfo`. The epochs, ``last.pt`` (explicit resume), early stopping
and ``metrics.jsonl`` are :mod:`carcheck.train.engine`'s.

Two modes:

- ``frozen`` (default): the head learns on cached pooled features of the frozen backbone
  (:class:`~carcheck.models.features.FeatureCache`, photo + mirror image): seconds per run on a
  CPU, and at inference the head reads the assessment's one backbone pass for free.
- ``finetune``: the backbone's last stage is copied into a trainable
  :class:`~carcheck.models.classifier.LastStageBranch` fed by the frozen stride-16 map, trained on
  augmented photos (fine-grained classes need it). Slower; use a GPU (``device="cuda"``) if you
  have one.

After training, the OOD rule (max logit of the closed-set classifier, Vaze et al. 2022) gets its
threshold on the validation split: 95% of in-distribution validation photos are kept.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.labels import LabelRow, assign_splits, read_labels
from ..data.taxonomy import get_mapping, get_taxonomy
from ..evaluate.classifier import ood_score, ood_threshold
from ..models.classifier import ClassifierHead, HeadInfo, ImageHead, LastStageBranch, save_head
from ..models.runtime import use_bf16
from .engine import MAY_DIFFER, fit, seed_everything, start_run
from .losses import focal_loss

__all__ = ["ClassifierTrainConfig", "prepare_rows", "class_alpha", "classification_loss", "train_classifier"]


@dataclass
class ClassifierTrainConfig:
    """Settings of one classifier run (saved as ``config.json`` in the run folder).

    Attributes:
        data: label CSV or folder-per-class root (:func:`~carcheck.data.labels.read_labels`).
        task: the head's task name (``presence``, ``damaged``, ``severity``, ``socar_state``...).
        out: run folder (one that holds ``last.pt`` is continued only with ``resume=True``).
        taxonomy: if set, labels must be classes of this taxonomy (its order = logit order).
        map_to: map labels through the declared mapping ``taxonomy -> map_to`` (e.g. SOCAR's
            14 classes to ``socar_defect``); rows mapped to None are dropped.
        loss: ``focal`` (alpha from class counts, ``gamma``) or ``ce``.
        weighted_sampling: draw training photos with probability 1 / count of their class.
        mode: ``frozen`` or ``finetune`` (see the module doc).
        patience: early-stopping patience in epochs (validation loss).
        val_loss: the validation loss that drives early stopping, ReduceLROnPlateau and the best
            checkpoint: ``train`` (the training loss, e.g. focal with alpha) or ``ce`` (plain
            cross-entropy, the negative log-likelihood). For the damage filter ``ce`` gave the higher
            validation score (mean of 3 seeds) with each of 4 sets of training views
            (bench/damage_filter_resolution.py).
        hidden: hidden width of the MLP head (0: linear).
        val_fraction / test_fraction: seeded stratified split of rows without one.
        views: cached views a frozen-mode training photo is drawn from each epoch
            (:data:`~carcheck.models.features.ALL_VIEWS`; default photo + mirror image; add
            ``lowres`` and ``lowres_hflip`` so that resolution stops being a class cue, as the
            shipped damage filter does).
        ood_data: label CSV / folder of out-of-distribution photos; its ``val`` rows (all rows
            when none is marked val) set the OOD threshold with the validation split (best
            balanced accuracy keeping >= 95% of in-distribution photos). Without it the threshold
            keeps 95% of the validation photos.
    """

    data: str
    task: str
    out: str = "runs/classifier"
    taxonomy: str | None = None
    map_to: str | None = None
    loss: str = "focal"
    gamma: float = 2.0
    weighted_sampling: bool = True
    mode: str = "frozen"
    epochs: int = 60
    patience: int = 3
    val_loss: str = "train"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    hidden: int = 256
    dropout: float = 0.3
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    cache_dir: str = "runs/feature_cache"
    longest: int = 512
    crop: int = 384
    device: str = "cpu"
    threads: int = 2
    precision: str = "auto"  # auto | fp32 | bf16 (carcheck.models.runtime.resolve_precision)
    ood_data: str | None = None
    views: tuple[str, ...] = ("full", "hflip")
    command: str = ""


def prepare_rows(cfg: ClassifierTrainConfig) -> tuple[list[LabelRow], list[str]]:
    """Rows with labels checked / mapped and every split assigned; the class list in logit order.

    Raises:
        TaxonomyError: a label is not a class of ``cfg.taxonomy`` or no mapping is declared.
        ValueError: fewer than 2 classes, or no training rows.
    """
    rows = read_labels(cfg.data)
    if cfg.taxonomy:
        tax = get_taxonomy(cfg.taxonomy)
        for r in rows:
            tax.index(r.label)  # raises naming the label
        classes = list(tax.classes)
        if cfg.map_to:
            m = get_mapping(cfg.taxonomy, cfg.map_to)
            rows = [replace(r, label=m.map_name(r.label)) for r in rows]
            rows = [r for r in rows if r.label is not None]
            classes = list(get_taxonomy(cfg.map_to).classes)
    else:
        classes = sorted({r.label for r in rows})
    rows = assign_splits(rows, (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction),
                         seed=cfg.seed)
    present = {r.label for r in rows}
    if len(present) < 2:
        raise ValueError(f"{cfg.data}: a classifier needs at least 2 classes, found {sorted(present)}")
    if not any(r.split == "train" for r in rows):
        raise ValueError(f"{cfg.data}: no training rows")
    return rows, classes


def class_alpha(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Focal-loss alpha per class from the training counts: ``N / (C * n_c)`` (1 for absent classes).
    ``labels (N,)`` int64 -> ``(C,)`` float32."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    alpha = labels.numel() / (num_classes * counts.clamp(min=1))
    alpha[counts == 0] = 1.0
    return alpha


def classification_loss(logits: torch.Tensor, target: torch.Tensor, kind: str, alpha: torch.Tensor | None = None,
                        gamma: float = 2.0) -> torch.Tensor:
    """``focal`` (alpha-weighted, eq. 5 of Lin et al.) or ``ce``. ``logits (B, C)``, ``target (B,)`` int64.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "focal":
        return focal_loss(logits, target, gamma=gamma, weight=alpha)
    if kind == "ce":
        return F.cross_entropy(logits.float(), target)
    raise ValueError(f"unknown loss {kind!r}; use focal or ce")


def _frozen_data(cfg, rows, classes, track, log):
    """Cached pooled features (photo + mirror image) and labels of the train and val splits."""
    from ..models.features import FeatureCache

    cache = FeatureCache(cfg.cache_dir, longest=cfg.longest, precision=cfg.precision, views=tuple(cfg.views))
    idx = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in ("train", "val"):  # validation uses the photo itself only
        sel = [r for r in rows if r.split == split]
        feats, ok, bad = cache.get_many([r.path for r in sel], None if split == "train" else ("full",), track=track)
        for f, why in bad:
            log(f"[yellow]skipped[/] {f}: {why}")
        out[split] = (feats, torch.tensor([idx[sel[i].label] for i in ok], dtype=torch.long))
    return out


class _PhotoDataset(torch.utils.data.Dataset):
    """Photos resized to ``longest`` px (longer side), then a random (train) or centre crop of
    ``crop`` px squared, padded with zeros where the photo is smaller; train adds flip + colour jitter."""

    def __init__(self, rows, labels, longest, crop, train):
        from torchvision.transforms import v2

        self.rows, self.labels, self.train = rows, labels, train
        ops = [v2.Resize(longest - 1, max_size=longest, antialias=True)]
        if train:
            ops += [v2.RandomCrop(crop, pad_if_needed=True), v2.RandomHorizontalFlip(),
                    v2.ColorJitter(0.3, 0.3, 0.2, 0.02)]
        else:
            ops += [v2.CenterCrop(crop)]
        ops += [v2.ToDtype(torch.float32, scale=True)]
        self.tf = v2.Compose(ops)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        from ..data.images import load_image

        x = torch.from_numpy(load_image(self.rows[i].path)).permute(2, 0, 1)
        return self.tf(x), self.labels[i]


def train_classifier(cfg: ClassifierTrainConfig, track: Callable = lambda it, **k: it,
                     log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Train one classifier head; returns the run folder (``best.safetensors`` inside).

    Args:
        cfg: the run's settings.
        track: progress wrapper ``track(iterable, description=...)``.
        log: progress and warning lines.
        resume: continue the run in ``cfg.out`` from its ``last.pt`` (:func:`~carcheck.train.engine.start_run`:
            every field but ``command``, ``out``, ``cache_dir``, ``epochs`` and, in frozen mode, ``threads``
            must equal the stored ``config.json``; ``epochs`` may change because nothing in the recipe
            depends on it; in ``finetune`` mode ``threads`` sets the data-loader workers, so it must not).
    Raises:
        ValueError / TaxonomyError: from :func:`prepare_rows`; unknown mode or loss.
        RunFolderError: ``cfg.out`` holds ``last.pt`` and ``resume`` is False.
        ConfigChangedError: ``resume`` with a changed config (names the fields).
    """
    if cfg.mode not in ("frozen", "finetune"):
        raise ValueError(f"unknown mode {cfg.mode!r}; use frozen or finetune")
    if cfg.loss not in ("focal", "ce"):
        raise ValueError(f"unknown loss {cfg.loss!r}; use focal or ce")
    if cfg.val_loss not in ("train", "ce"):
        raise ValueError(f"unknown validation loss {cfg.val_loss!r}; use train or ce")
    may_differ = MAY_DIFFER | {"epochs"}
    if cfg.mode == "finetune":
        may_differ -= {"threads"}
    out = start_run(cfg, resume, may_differ)
    rows, classes = prepare_rows(cfg)
    dev = torch.device(cfg.device)
    if cfg.mode == "frozen":  # the feature cache builds a backbone only for photos it has not seen
        data = _frozen_data(cfg, rows, classes, track, log)
        y_train = data["train"][1]
        D = data["train"][0].shape[-1]
        branch = None
    else:
        from ..models.backbone import build_backbone

        backbone = build_backbone("lite0", channels_last=True).to(dev)
        for p in backbone.parameters():
            p.requires_grad_(False)
        D = backbone.num_features
        from ..data.images import ImageLoadError, load_image

        idx = {c: i for i, c in enumerate(classes)}
        sets = {s: [r for r in rows if r.split == s] for s in ("train", "val")}
        for s in ("train", "val"):  # a bad file must not stop a data-loader batch mid-epoch: drop it up front
            good = []
            for r in track(sets[s], description=f"checking {s} photos"):
                try:
                    load_image(r.path)
                    good.append(r)
                except ImageLoadError as e:
                    log(f"[yellow]skipped[/] {e.path}: {e.reason}")
            sets[s] = good
        y_train = torch.tensor([idx[r.label] for r in sets["train"]])
        loaders = {s: torch.utils.data.DataLoader(
            _PhotoDataset(sets[s], [idx[r.label] for r in sets[s]], cfg.longest, cfg.crop, s == "train"),
            batch_size=cfg.batch_size, shuffle=False, num_workers=min(8, cfg.threads), drop_last=False)
            for s in ("train", "val")}
        branch = LastStageBranch(backbone).to(dev)
    C = len(classes)
    present = sorted({classes[i] for i in y_train.tolist()})
    if len(present) < 2:  # every photo of a class unreadable: say so, not a sampler error deep in torch
        raise ValueError(f"{cfg.data}: after skipping unreadable photos the train split has {len(y_train)} photo(s) "
                         f"of {len(present)} class(es) {present}; a classifier needs readable photos of >= 2 classes")
    seed_everything(cfg.seed)  # again: the head's init must not depend on whether the cache had to build a backbone
    model = ImageHead(ClassifierHead(D, C, cfg.hidden, cfg.dropout), branch).to(dev)
    alpha = class_alpha(y_train, C).to(dev) if cfg.loss == "focal" else None
    counts = torch.bincount(y_train, minlength=C).float()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=1)

    def run_epoch(train: bool, split: str):
        model.train(train)
        total, n, correct = 0.0, 0, 0
        if cfg.mode == "frozen":
            feats, y = data[split]
            if train:
                if cfg.weighted_sampling:
                    w = (1.0 / counts.clamp(min=1))[y]
                    order = torch.multinomial(w, len(y), replacement=True)
                else:
                    order = torch.randperm(len(y))
                views = torch.randint(0, feats.shape[1], (len(y),))
            else:
                order, views = torch.arange(len(y)), torch.zeros(len(y), dtype=torch.long)
            batches = [(feats[order[i:i + cfg.batch_size], views[i:i + cfg.batch_size]], y[order[i:i + cfg.batch_size]])
                       for i in range(0, len(y), cfg.batch_size)]
        else:
            batches = loaders[split]
            if train and cfg.weighted_sampling:
                w = (1.0 / counts.clamp(min=1))[y_train]
                sampler = torch.utils.data.WeightedRandomSampler(w.double(), len(w), replacement=True)
                batches = torch.utils.data.DataLoader(loaders[split].dataset, batch_size=cfg.batch_size,
                                                      sampler=sampler, num_workers=min(8, cfg.threads))
        for xb, yb in batches:
            xb, yb = xb.to(dev), torch.as_tensor(yb).to(dev)
            with torch.set_grad_enabled(train):
                if cfg.mode == "frozen":
                    logits = model.head(xb)
                else:
                    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                        enabled=use_bf16(cfg.precision, dev.type)):
                        f16 = backbone(xb.contiguous(memory_format=torch.channels_last)).features[2]
                    model.branch.train(train)
                    logits = model.head(model.branch(f16.float()))
                if train or cfg.val_loss == "train":
                    loss = classification_loss(logits, yb, cfg.loss, alpha, cfg.gamma)
                else:
                    loss = F.cross_entropy(logits.float(), yb)
            if train:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            total += float(loss.detach()) * len(yb)
            n += len(yb)
            correct += int((logits.argmax(1) == yb).sum())
        return total / max(n, 1), correct / max(n, 1)

    def train_one_epoch(epoch: int) -> dict:
        loss, acc = run_epoch(True, "train")
        return {"train_loss": loss, "train_acc": acc}

    @torch.no_grad()
    def validate(epoch: int) -> dict:
        loss, acc = run_epoch(False, "val")
        return {"val_loss": loss, "val_acc": acc}

    result = fit(out, model=model, optimizer=opt, scheduler=sched, train_one_epoch=train_one_epoch, validate=validate,
                 epochs=cfg.epochs, monitor="val_loss", mode="min", min_delta=1e-4, patience=cfg.patience,
                 on_best=lambda epoch, rec: torch.save(model.state_dict(), out / "best_state.pt"),
                 resume=resume, log=log)
    best = result.best

    model.load_state_dict(torch.load(out / "best_state.pt", map_location="cpu", weights_only=True))
    model.eval().cpu()
    # OOD threshold on validation: max logit keeping 95% of in-distribution photos
    with torch.no_grad():
        if cfg.mode == "frozen":
            val_logits = model.head(data["val"][0][:, 0])
        else:
            val_logits = torch.cat([model.head(model.branch(backbone.cpu()(xb).features[2].float()))
                                    for xb, _ in loaders["val"]])
    ood_val = None
    if cfg.ood_data and cfg.mode == "frozen":
        from ..models.features import FeatureCache

        orows = read_labels(cfg.ood_data)
        orows = [r for r in orows if r.split == "val"] or orows
        of, _, _ = FeatureCache(cfg.cache_dir, longest=cfg.longest, precision=cfg.precision).get_many([r.path for r in orows], ("full",),
                                                                               track=track)
        with torch.no_grad():
            ood_val = ood_score(model.head(of[:, 0]), "max_logit").tolist()
    thr = ood_threshold(ood_score(val_logits, "max_logit").tolist(), ood_val)
    info = HeadInfo(kind="classifier", task=cfg.task, classes=classes, longest=cfg.longest, hidden=cfg.hidden,
                    ood={"score": "max_logit", "threshold": round(thr, 4),
                         "rule": ("best balanced accuracy on validation in/out photos keeping >= 95% of in-distribution"
                                  if ood_val else "keeps 95% of validation photos")},
                    extra={"command": cfg.command, "mode": cfg.mode, "loss": cfg.loss, "val_loss": cfg.val_loss,
                           "views": list(cfg.views),
                           "map": [cfg.taxonomy, cfg.map_to] if cfg.taxonomy and cfg.map_to else None,
                           "ood_data": cfg.ood_data,
                           "train_counts": {c: int(counts[i]) for i, c in enumerate(classes)},
                           "best_val_loss": best, "data": str(cfg.data)})
    save_head(model, info, out / "best.safetensors")
    (out / "splits.json").write_text(json.dumps(Counter(f"{r.split}/{r.label}" for r in rows), indent=1))
    return out
