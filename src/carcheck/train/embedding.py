"""Same-vehicle verification: a Siamese embedding head trained on identity-labelled photos.

Design (the part-classification and verification paper, after Koch et al., 2015): both photos
go through the same network (the frozen backbone's pooled features -> a shared MLP -> 128-d
L2-normalised embedding); the element-wise L1 distance ``|e_a - e_b|`` feeds a learned linear
layer whose sigmoid is the probability that both show the same vehicle; binary cross-entropy.

Training pairs are drawn per batch from the training identities: every identity with >= 2
photos gives a positive pair; negatives pair it with another identity, of the same ``source``
(vehicle type) with probability ``hard_fraction``. Validation pairs are fixed (seeded). The
decision threshold is the equal-error-rate threshold on the validation pairs and is stored in
the head file; the verification distance is ``1 - P(same)``. AdamW, ``ReduceLROnPlateau`` and
early stopping on the validation loss; the epochs, ``last.pt`` (explicit resume, with the pair
sampler's random state), early stopping and ``metrics.jsonl`` are :mod:`carcheck.train.engine`'s.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.labels import LabelRow, assign_splits, read_labels
from ..evaluate.classifier import verification_metrics
from ..models.classifier import EmbeddingHead, HeadInfo, ImageHead, save_head
from ..models.features import FeatureCache
from ..models.runtime import use_bf16
from .engine import MAY_DIFFER, fit, start_run

__all__ = ["EmbeddingTrainConfig", "make_pairs", "pair_distances", "train_embedding"]


@dataclass
class EmbeddingTrainConfig:
    """Settings of one verification run (``config.json`` in the run folder).

    Attributes:
        data: label CSV whose ``label`` (or ``group``) is the vehicle identity; ``source`` is
            used as the vehicle type for hard negatives.
        hard_fraction: share of negatives drawn from the same source (vehicle type).
        patience: early stopping on the validation loss.
        mode: ``frozen`` (head on cached pooled features) or ``finetune`` (also a trainable copy
            of the backbone's last stage, :class:`~carcheck.models.classifier.LastStageBranch`,
            fed by the frozen stride-16 map; the frozen maps of every photo and its mirror image
            are computed once and kept in memory; use a GPU if you have one).
    """

    data: str
    out: str = "runs/verification"
    dim: int = 128
    hidden: int = 512
    dropout: float = 0.2
    epochs: int = 200
    patience: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    hard_fraction: float = 0.5
    seed: int = 0
    cache_dir: str = "runs/feature_cache"
    longest: int = 512
    threads: int = 2
    precision: str = "auto"  # auto | fp32 | bf16 (carcheck.models.runtime.resolve_precision)
    mode: str = "frozen"
    device: str = "cpu"
    command: str = ""


def make_pairs(ids: list[str], sources: list[str], rng: random.Random, hard_fraction: float = 0.5,
               n_neg_per_pos: int = 1) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, same)`` over row indices: each identity's first two photos as a positive and
    ``n_neg_per_pos`` negatives from another identity (same source with prob. ``hard_fraction``)."""
    by_id: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(ids):
        by_id[k].append(i)
    by_src: dict[str, list[str]] = defaultdict(list)
    for k, idx in by_id.items():
        by_src[sources[idx[0]]].append(k)
    keys = sorted(by_id)
    pairs = []
    for k in keys:
        idx = by_id[k]
        if len(idx) >= 2:
            a, b = rng.sample(idx, 2)
            pairs.append((a, b, 1))
        for _ in range(n_neg_per_pos):
            same_src = [o for o in by_src[sources[idx[0]]] if o != k]
            pool = same_src if same_src and rng.random() < hard_fraction else [o for o in keys if o != k]
            if pool:
                other = rng.choice(pool)
                pairs.append((rng.choice(idx), rng.choice(by_id[other]), 0))
    return pairs


def _stride16_maps(backbone, paths, longest, dev, track, bf16: bool = True):
    """Frozen stride-16 maps of each photo and its mirror image (bf16, kept on ``dev``):
    ``(list of (2, C, h, w) tensors, readable indices, [(file, reason)])``."""
    from ..data.images import ImageLoadError, load_image
    from ..models.backbone import inference_context
    from ..models.inference import to_input_tensor

    maps, ok, bad = [], [], []
    for i, p in enumerate(track(list(paths), description="stride-16 maps")):
        try:
            x = to_input_tensor(load_image(p), longest).to(dev)
        except ImageLoadError as e:
            bad.append((str(p), e.reason))
            continue
        with inference_context(bf16 and dev.type == "cpu"), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            f = backbone(torch.cat([x, x.flip(-1)])).features[2]
        maps.append(f.to(torch.bfloat16).clone())  # outside inference mode: a normal tensor, usable in autograd
        ok.append(i)
    return maps, ok, bad


def pair_distances(head: EmbeddingHead, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Verification distance ``1 - sigmoid(pair_logit)`` in [0, 1] of pooled-feature pairs ``(N, D)``."""
    with torch.no_grad():
        return 1 - torch.sigmoid(head.pair_logit(head(fa), head(fb)))


def train_embedding(cfg: EmbeddingTrainConfig, track: Callable = lambda it, **k: it,
                    log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Train the Siamese head on cached pooled features; returns the run folder (``best.safetensors``).

    Args:
        cfg: the run's settings.
        track: progress wrapper ``track(iterable, description=...)``.
        log: progress and warning lines.
        resume: continue the run in ``cfg.out`` from its ``last.pt``; every field but ``command``,
            ``out``, ``cache_dir``, ``threads`` and ``epochs`` (nothing in the recipe depends on it) must
            equal the stored ``config.json`` (:func:`~carcheck.train.engine.start_run`).
    Raises:
        ValueError: fewer than 2 identities in the training or validation split.
        RunFolderError: ``cfg.out`` holds ``last.pt`` and ``resume`` is False.
        ConfigChangedError: ``resume`` with a changed config (names the fields).
    """
    out = start_run(cfg, resume, MAY_DIFFER | {"epochs"})
    rows: list[LabelRow] = read_labels(cfg.data)
    rows = [r if r.group else LabelRow(r.path, r.label, r.source, r.split, r.label) for r in rows]
    rows = assign_splits(rows, seed=cfg.seed, strata=("source",))
    data = {}
    dev = torch.device(cfg.device)
    branch = None
    if cfg.mode == "finetune":
        from ..models.backbone import build_backbone
        from ..models.classifier import LastStageBranch

        backbone = build_backbone("lite0").to(dev)
        branch = LastStageBranch(backbone).to(dev)
        in_features = backbone.num_features
    for split in ("train", "val"):  # the test split is the benchmarks' (bench/identity.py), never read here
        sel = [r for r in rows if r.split == split]
        if cfg.mode == "finetune":
            feats, ok, bad = _stride16_maps(backbone, [r.path for r in sel], cfg.longest, dev, track,
                                            use_bf16(cfg.precision, dev.type))
        else:
            feats, ok, bad = FeatureCache(cfg.cache_dir, longest=cfg.longest, precision=cfg.precision).get_many([r.path for r in sel], track=track)
        for f, why in bad:
            log(f"[yellow]skipped[/] {f}: {why}")
        data[split] = (feats, [sel[i].group for i in ok], [sel[i].source for i in ok])
    for s in ("train", "val"):
        if len(set(data[s][1])) < 2:
            raise ValueError(f"{cfg.data}: the {s} split needs at least 2 identities")
    if cfg.mode != "finetune":
        in_features = data["train"][0].shape[-1]
    torch.manual_seed(cfg.seed)  # again: the init must not depend on whether the cache built a backbone
    head = EmbeddingHead(in_features, cfg.dim, cfg.hidden, cfg.dropout).to(dev)
    model = ImageHead(head, branch)

    def embed(feats, idx, views):
        """Embeddings of rows ``idx`` in the given views: pooled vectors, or branch(stride-16 maps)."""
        if branch is None:
            return head(feats[idx, views].to(dev))
        pooled = torch.cat([branch(feats[int(i)][int(v)].to(dev)[None]) for i, v in zip(idx, views)])
        return head(pooled)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=3)
    vf, vid, vsrc = data["val"]
    val_pairs = torch.tensor(make_pairs(vid, vsrc, random.Random(cfg.seed + 1), cfg.hard_fraction, 2))
    rng = random.Random(cfg.seed)
    zeros = torch.zeros(len(val_pairs), dtype=torch.long)

    def train_one_epoch(epoch: int) -> dict:
        model.train()
        if branch is not None:  # one photo at a time: BatchNorm keeps its ImageNet statistics
            for m in branch.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        tf, tid, tsrc = data["train"]
        pairs = torch.tensor(make_pairs(tid, tsrc, rng, cfg.hard_fraction, 2))
        pairs = pairs[torch.randperm(len(pairs))]
        total = 0.0
        for i in range(0, len(pairs), cfg.batch_size):
            p = pairs[i:i + cfg.batch_size]
            va = torch.randint(0, 2, (len(p),))
            vb = torch.randint(0, 2, (len(p),))
            logit = head.pair_logit(embed(tf, p[:, 0], va), embed(tf, p[:, 1], vb))
            loss = F.binary_cross_entropy_with_logits(logit, p[:, 2].float().to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(p)
        return {"train_loss": total / len(pairs)}

    @torch.no_grad()
    def validate(epoch: int) -> dict:
        model.eval()
        logit = head.pair_logit(embed(vf, val_pairs[:, 0], zeros), embed(vf, val_pairs[:, 1], zeros))
        return {"val_loss": float(F.binary_cross_entropy_with_logits(logit, val_pairs[:, 2].float().to(dev)))}

    fit(out, model=model, optimizer=opt, scheduler=sched, train_one_epoch=train_one_epoch, validate=validate,
        epochs=cfg.epochs, monitor="val_loss", mode="min", min_delta=1e-4, patience=cfg.patience,
        on_best=lambda epoch, rec: torch.save(model.state_dict(), out / "best_state.pt"),
        generators={"pairs": rng}, resume=resume, log=log)
    model.load_state_dict(torch.load(out / "best_state.pt", map_location=dev, weights_only=True))
    model.eval()
    with torch.no_grad():
        d = 1 - torch.sigmoid(head.pair_logit(embed(vf, val_pairs[:, 0], zeros), embed(vf, val_pairs[:, 1], zeros)))
    vm = verification_metrics(d.cpu().tolist(), val_pairs[:, 2].tolist())
    log(f"validation pairs: ROC AUC {vm['roc_auc']:.3f}, EER {vm['eer']:.3f} at distance {vm['eer_threshold']:.3f}")
    info = HeadInfo(kind="embedding", task="verification", longest=cfg.longest, hidden=cfg.hidden, dim=cfg.dim,
                    threshold=round(vm["eer_threshold"], 4),
                    extra={"command": cfg.command, "distance": "1 - sigmoid(w . |e_a - e_b| + b)",
                           "val": vm, "data": str(cfg.data), "mode": cfg.mode})
    save_head(model.cpu(), info, out / "best.safetensors")
    return out
