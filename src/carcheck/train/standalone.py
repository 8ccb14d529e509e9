"""Fine-tune a whole backbone for one image-level task: a :class:`~carcheck.models.classifier.StandaloneNet`.

For tasks the shared frozen pass does not separate well (vehicle re-identification, fine-grained
make/model), the photo gets a second, small backbone pass at a low resolution whose weights are
all trained. Two kinds:

- ``embedding`` (verification): the strong re-id baseline of Luo et al. (CVPR-W 2019, "Bag of
  Tricks"): P identities x K photos per batch, batch-hard triplet loss (Hermans et al. 2017,
  margin 0.3) on the pooled features through pytorch-metric-learning, plus identity
  cross-entropy with label smoothing 0.1 after a BatchNorm "BNNeck"; cosine distance at test time.
  Model selection: ROC AUC over all pairs of the validation photos; the decision threshold is the
  equal-error-rate distance on those pairs.
- ``classifier``: cross-entropy with label smoothing 0.1 or focal loss (class-count alpha, gamma 2,
  as the make/model paper), weighted sampling optional; model selection on validation top-1;
  the OOD max-logit threshold keeps 95% of validation photos.

Both: photos decoded once and kept in memory at ``input_size`` (+1/8 for random crops), random
resized crop (classifier) or pad-and-crop (embedding) and horizontal flips; AdamW with a
10x larger learning rate for the new layers, one-cycle schedule; fp32 training (bf16 autocast
for validation where the hardware runs it natively, precision ``auto``); the best epoch written as
``best.safetensors`` (float16, with its :class:`HeadInfo`). The epochs, ``last.pt`` (explicit resume),
best-on-validation and ``metrics.jsonl`` are :mod:`carcheck.train.engine`'s.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..models.runtime import use_bf16
import torch.nn.functional as F

from ..data.labels import LabelRow, assign_splits, read_labels
from ..evaluate.classifier import ood_score, ood_threshold, verification_metrics
from ..models.classifier import HeadInfo, StandaloneNet, save_head
from .engine import MAY_DIFFER, fit, seed_everything, start_run

__all__ = ["StandaloneTrainConfig", "train_standalone", "export_best", "export_run", "pair_scores"]


@dataclass
class StandaloneTrainConfig:
    """Settings of one standalone fine-tune (``config.json`` in the run folder).

    Attributes:
        data: label CSV (or class folders). For ``embedding`` the ``group`` (else ``label``) is the
            identity and ``source`` the stratum of the split (vehicle type).
        task: the head's task name (``verification``, ``make_model``...).
        kind: ``embedding`` or ``classifier``.
        height / width: input size in px (photos are resized to it, aspect ratio not kept).
        epochs: one-cycle schedule length; the best validation epoch is kept.
        lr: backbone learning rate (new layers: 10x).
        batch_size: classifier batch; for embeddings ``ids_per_batch`` x ``photos_per_id``.
        loss: classifier loss, ``ce`` (label smoothing 0.1) or ``focal``.
        margin: triplet margin (embeddings).
    """

    data: str
    task: str
    kind: str = "embedding"
    out: str = "runs/standalone"
    backbone: str = "lite0"
    height: int = 224
    width: int = 224
    epochs: int = 12
    lr: float = 4e-4
    weight_decay: float = 5e-4
    batch_size: int = 32
    ids_per_batch: int = 16
    photos_per_id: int = 2
    loss: str = "ce"
    margin: float = 0.3
    flip_tta: bool = True
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    threads: int = 2
    precision: str = "auto"  # auto | fp32 | bf16 (carcheck.models.runtime.resolve_precision)
    device: str = "cpu"
    command: str = ""


def _load_split(rows: list[LabelRow], size: tuple[int, int], track, log) -> tuple[torch.Tensor, list[LabelRow]]:
    """Photos resized to ``size`` as one ``(N, 3, H, W)`` uint8 tensor; unreadable files are logged and dropped."""
    from torchvision.transforms import v2

    from ..data.images import ImageLoadError, load_image

    out, kept = [], []
    for r in track(rows, description=f"loading {len(rows)} photos"):
        try:
            im = torch.from_numpy(load_image(r.path)).permute(2, 0, 1)
        except ImageLoadError as e:
            log(f"[yellow]skipped[/] {e.path}: {e.reason}")
            continue
        out.append(v2.functional.resize(im, list(size), antialias=True))
        kept.append(r)
    if not out:
        return torch.zeros(0, 3, *size, dtype=torch.uint8), kept
    return torch.stack(out), kept


@torch.no_grad()
def _outputs(net: StandaloneNet, x: torch.Tensor, dev: torch.device, batch: int = 64, bf16: bool = True) -> torch.Tensor:
    """Eval-mode outputs (with the net's flip TTA) of uint8 photos ``(N, 3, H, W)``."""
    net.eval()
    res = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(dev).float().div(255)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            res.append(net(xb).float().cpu())
    return torch.cat(res) if res else torch.zeros(0)


def pair_scores(emb: torch.Tensor, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances and same-identity labels of all unordered pairs of unit embeddings ``(N, D)``."""
    d = (1 - emb @ emb.T).numpy()
    same = np.array([[a == b for b in ids] for a in ids])
    iu = np.triu_indices(len(ids), 1)
    return d[iu], same[iu].astype(int)



def split_rows(cfg: StandaloneTrainConfig) -> tuple[list[LabelRow], Callable[[LabelRow], str]]:
    """The run's labelled rows with their train / val / test split (seeded by ``cfg.seed``), and the key a row
    is learned by: its identity (``group``, else ``label``) for an embedding, whose identities never straddle
    splits; its ``label`` for a classifier."""
    rows = read_labels(cfg.data)
    if cfg.kind == "embedding":
        rows = [r if r.group else LabelRow(r.path, r.label, r.source, r.split, r.label) for r in rows]
        return assign_splits(rows, seed=cfg.seed, strata=("source",)), lambda r: r.group
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    return assign_splits(rows, fractions, seed=cfg.seed), lambda r: r.label

def train_standalone(cfg: StandaloneTrainConfig, track: Callable = lambda it, **k: it,
                     log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Fine-tune one :class:`StandaloneNet`; returns the run folder (``best.safetensors`` inside).

    Args:
        cfg: the run's settings.
        track: progress wrapper ``track(iterable, description=...)``.
        log: progress and warning lines.
        resume: continue the run in ``cfg.out`` from its ``last.pt``; every field but ``command``,
            ``out`` and ``threads`` must equal the stored ``config.json``. ``epochs`` must too: it is the
            length of the one-cycle schedule (:func:`~carcheck.train.engine.start_run`).
    Raises:
        ValueError: unknown kind or loss; fewer than 2 classes / identities in train or val.
        RunFolderError: ``cfg.out`` holds ``last.pt`` and ``resume`` is False.
        ConfigChangedError: ``resume`` with a changed config (names the fields).
    """
    if cfg.kind not in ("embedding", "classifier"):
        raise ValueError(f"unknown kind {cfg.kind!r}; use embedding or classifier")
    if cfg.loss not in ("ce", "focal"):
        raise ValueError(f"unknown loss {cfg.loss!r}; use ce or focal")
    from pytorch_metric_learning import losses, miners
    from torchvision.transforms import v2

    from ..models.backbone import EfficientNetLiteBackbone
    from .classifier import class_alpha, classification_loss

    out = start_run(cfg, resume, MAY_DIFFER)
    emb = cfg.kind == "embedding"
    rows, key = split_rows(cfg)
    size = (cfg.height, cfg.width)
    pad = (cfg.height + cfg.height // 8, cfg.width + cfg.width // 8)
    x_tr, r_tr = _load_split([r for r in rows if r.split == "train"], pad if not emb else size, track, log)
    x_va, r_va = _load_split([r for r in rows if r.split == "val"], size, track, log)
    classes = sorted({key(r) for r in r_tr})
    if len(classes) < 2 or len({key(r) for r in r_va}) < 2:
        raise ValueError(f"{cfg.data}: train and val need at least 2 {'identities' if emb else 'classes'} each")
    cix = {c: i for i, c in enumerate(classes)}
    y_tr = torch.tensor([cix[key(r)] for r in r_tr])
    dev = torch.device(cfg.device)
    seed_everything(cfg.seed)
    net = StandaloneNet(EfficientNetLiteBackbone(cfg.backbone), 0 if emb else len(classes), size, cfg.flip_tta)
    net.backbone.to(memory_format=torch.channels_last)
    id_head = torch.nn.Linear(net.backbone.num_features, len(classes), bias=False) if emb else None
    modules = torch.nn.ModuleDict({"net": net, **({"id_head": id_head} if emb else {})}).to(dev)
    new = [p for n, p in modules.named_parameters() if not n.startswith("net.backbone.") and p.requires_grad]
    opt = torch.optim.AdamW([{"params": list(net.backbone.parameters()), "lr": cfg.lr},
                             {"params": new, "lr": cfg.lr * 10}], weight_decay=cfg.weight_decay)
    if emb:
        by_id: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(y_tr.tolist()):
            by_id[c].append(i)
        usable = [c for c, v in by_id.items() if len(v) >= 2]
        steps = max(1, len(usable) // cfg.ids_per_batch)
        aug = v2.Compose([v2.RandomHorizontalFlip(), v2.Pad(max(1, cfg.height // 22)), v2.RandomCrop(size),
                          v2.RandomErasing(p=0.3, value=0)])
        triplet, miner = losses.TripletMarginLoss(margin=cfg.margin), miners.BatchHardMiner()
    else:
        steps = max(1, len(y_tr) // cfg.batch_size)
        aspect = cfg.width / cfg.height  # crops keep roughly the input's aspect ratio
        aug = v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(0.83 * aspect, 1.2 * aspect), antialias=True),
                          v2.RandomHorizontalFlip()])
        alpha = class_alpha(y_tr, len(classes)).to(dev) if cfg.loss == "focal" else None
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.lr, cfg.lr * 10], total_steps=cfg.epochs * steps,
                                                pct_start=0.1)

    def validate(epoch: int) -> dict:
        o = _outputs(net, x_va, dev, bf16=use_bf16(cfg.precision, dev.type))
        if emb:
            d, same = pair_scores(o, [key(r) for r in r_va])
            m = verification_metrics(d.tolist(), same.tolist())
            return {"val_auc": m["roc_auc"], "val_eer": m["eer"]}
        yv = torch.tensor([cix.get(key(r), -1) for r in r_va])
        top1 = float((o.argmax(1) == yv).float().mean())
        return {"val_top1": top1, "val_loss": float(F.cross_entropy(o, yv.clamp(min=0)))}

    def train_one_epoch(epoch: int) -> dict:
        modules.train()
        total = 0.0
        if emb:
            order = random.sample(usable, len(usable))
        else:
            order = torch.randperm(len(y_tr)).tolist()
        for s in range(steps):
            if emb:
                idx = [i for c in order[s * cfg.ids_per_batch:(s + 1) * cfg.ids_per_batch]
                       for i in random.sample(by_id[c], min(cfg.photos_per_id, len(by_id[c])))]
            else:
                idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            xb = torch.stack([aug(x_tr[i]) for i in idx]).to(dev).float().div(255)
            yb = y_tr[idx].to(dev)
            pooled = net.pooled(xb)
            if emb:
                loss = (F.cross_entropy(id_head(net.project(pooled)), yb, label_smoothing=0.1)
                        + triplet(pooled, yb, miner(pooled, yb)))
            elif cfg.loss == "focal":
                loss = classification_loss(net.project(pooled), yb, "focal", alpha)
            else:
                loss = F.cross_entropy(net.project(pooled), yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        return {"train_loss": total / steps}

    best = fit(out, model=modules, optimizer=opt, scheduler=sched, train_one_epoch=train_one_epoch, validate=validate,
               epochs=cfg.epochs, monitor="val_auc" if emb else "val_top1", mode="max",
               on_best=lambda epoch, rec: torch.save(net.state_dict(), out / "best_state.pt"),
               resume=resume, log=log).best

    export_best(cfg, out, net, x_va, r_va, key, classes, len(r_tr), best, log)
    return out


def export_best(cfg: StandaloneTrainConfig, out: Path, net: StandaloneNet, x_va: torch.Tensor, r_va: list[LabelRow],
                key: Callable[[LabelRow], str], classes: list[str], n_train: int, best: float | None,
                log: Callable[[str], None] = print) -> Path:
    """Write ``out/best.safetensors`` from ``out/best_state.pt``: the best epoch's weights with their
    :class:`HeadInfo` (classes, the OOD threshold that keeps 95% of the validation photos, or the EER
    threshold of validation pairs for an embedding). ``x_va`` ``(N, 3, H, W)`` uint8 validation photos,
    ``r_va`` their rows, ``key`` a row's class / identity, ``classes`` the classifier's classes (the
    training rows' sorted labels), ``best`` the monitored validation value."""
    emb = cfg.kind == "embedding"
    size = (cfg.height, cfg.width)
    net.load_state_dict(torch.load(out / "best_state.pt", map_location="cpu", weights_only=True))
    net.cpu().eval()
    o = _outputs(net, x_va, torch.device("cpu"), bf16=use_bf16(cfg.precision))
    extra = {"command": cfg.command, "mode": "standalone", "data": str(cfg.data), "best_val": best,
             "train_photos": n_train, "val_photos": len(r_va)}
    if (out / "metrics.jsonl").is_file():  # how long it trained, and its validation curve (the model card's)
        import json

        ms = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
        monitor = "val_auc" if emb else "val_top1"
        extra.update(epochs_done=len(ms), epochs_planned=cfg.epochs,
                     best_epoch=max(range(len(ms)), key=lambda i: ms[i].get(monitor, float("-inf"))) + 1 if ms else None,
                     train_seconds=round(sum(m.get("seconds", 0) for m in ms)),
                     val_curve=[round(m.get(monitor, float("nan")), 4) for m in ms])
    if emb:
        d, same = pair_scores(o, [key(r) for r in r_va])
        vm = verification_metrics(d.tolist(), same.tolist())
        log(f"validation pairs: ROC AUC {vm['roc_auc']:.4f}, EER {vm['eer']:.4f} at distance {vm['eer_threshold']:.4f}")
        info = HeadInfo(kind="embedding", task=cfg.task, longest=max(size), dim=net.backbone.num_features,
                        threshold=round(vm["eer_threshold"], 4),
                        extra={**extra, "distance": "cosine: 1 - e_a . e_b", "val": vm,
                               "threshold_rule": "EER on all pairs of the validation photos"})
    else:
        thr = ood_threshold(ood_score(o, "max_logit").tolist())
        info = HeadInfo(kind="classifier", task=cfg.task, classes=classes, longest=max(size),
                        ood={"score": "max_logit", "threshold": round(thr, 4), "rule": "keeps 95% of validation photos"},
                        extra={**extra, "loss": cfg.loss})
    save_head(net, info, out / "best.safetensors")
    return out / "best.safetensors"


def export_run(run: str | Path, track: Callable = lambda it, **k: it, log: Callable[[str], None] = print) -> Path:
    """``best.safetensors`` of a run folder from its ``best_state.pt`` and ``config.json``, while the run is in
    progress or after it stopped (the weights of its best epoch so far; the trainer writes the same file when
    its last epoch ends). The splits are rebuilt from the config (same seed), the validation photos reloaded.

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or ``best_state.pt``.
        ValueError: a kind other than ``classifier`` / ``embedding``.
    """
    import json

    from ..models.backbone import EfficientNetLiteBackbone

    out = Path(run)
    for f in ("config.json", "best_state.pt"):
        if not (out / f).is_file():
            raise FileNotFoundError(f"{out}: no {f} (not a standalone run folder, or no epoch finished yet)")
    stored = json.loads((out / "config.json").read_text(encoding="utf-8"))
    cfg = StandaloneTrainConfig(**{k: v for k, v in stored.items() if k in StandaloneTrainConfig.__dataclass_fields__})
    if cfg.kind not in ("embedding", "classifier"):
        raise ValueError(f"unknown kind {cfg.kind!r}")
    emb = cfg.kind == "embedding"
    rows, key = split_rows(cfg)
    size = (cfg.height, cfg.width)
    r_tr = [r for r in rows if r.split == "train"]
    x_va, r_va = _load_split([r for r in rows if r.split == "val"], size, track, log)
    classes = sorted({key(r) for r in r_tr})
    net = StandaloneNet(EfficientNetLiteBackbone(cfg.backbone, pretrained=False), 0 if emb else len(classes), size,
                        cfg.flip_tta)
    monitor = "val_auc" if emb else "val_top1"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    best = max((m.get(monitor) for m in metrics if m.get(monitor) is not None), default=None)
    log(f"{out}: exporting the best epoch so far ({monitor} {best}, {len(metrics)} epochs done)")
    return export_best(cfg, out, net, x_va, r_va, key, classes, len(r_tr), best, log)
