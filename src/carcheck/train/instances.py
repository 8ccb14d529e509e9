"""Training the CenterNet instance head (:mod:`carcheck.models.instances`) on cached frozen features.

The shipped damage network (backbone, its fine-tuned stages, decoder) is frozen, so its output for a photo never
changes: :func:`cache_split` runs it once per photo of a CarDD split at 640 px and stores the head's input
(:func:`~carcheck.models.instances.head_input`, ``(103, 80, 80)`` float16) in one memory-mapped array, the ground
truth boxes in a JSON file and, for the validation split, the damage logits at stride 4 (``(7, 160, 160)``
float16) from which the settings are chosen. :func:`train_head` then trains only the head (seconds a step), with
the one training loop (:func:`carcheck.train.engine.fit`: a checkpoint every epoch, explicit ``resume``).

Targets and losses are CenterNet's (Zhou et al., "Objects as Points", 2019): a Gaussian per object centre on its
class's heatmap with the radius of CornerNet (Law & Deng, ECCV 2018, section 3.2; min IoU 0.7), the penalty-reduced
focal loss of eq. 1 (alpha 2, beta 4) over the number of objects, L1 on the sub-cell offset (eq. 2, weight 1) and
on the size (eq. 3, weight 0.1) at the centres only.

Run: ``python -m carcheck.train.instances cache|train ...`` (``--help``); files under ``runs/instance_head/``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.taxonomy import IGNORE
from ..models.instances import STRIDE, CenterNetHead, damage_decoder_pass, head_input, save_instance_head

__all__ = ["cache_split", "gaussian_radius", "centernet_targets", "focal_loss", "centernet_loss", "HeadConfig",
           "train_head"]

SIZE = 640  #: CarDD's photos (Roboflow export: 640 x 640) run at their native size
CELLS = SIZE // STRIDE


def _boxes_of(ds, index: int, insts, h: int, w: int, tax) -> list[list[float]]:
    """``[[class_index, x0, y0, x1, y1]]`` (px, x1/y1 exclusive) of an item's instances, from their masks."""
    out = []
    for inst in insts:
        c = ds.category_map.get(inst.category)
        if c is None or c == IGNORE or c not in tax.classes:
            continue
        m = inst.to_mask(h, w)
        ys, xs = np.nonzero(m)
        if xs.size:
            out.append([tax.index(c) + 1, float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
    return out


def cache_split(yaml: str, split: str, out: str | Path, keep_logits: bool = False, seg=None, limit: int | None = None,
                log=print) -> Path:
    """Run the frozen damage network once over a CarDD split and store what the head trains on.

    Files in ``out``: ``{split}_x.f16`` (memory-mapped ``(N, 103, 80, 80)`` float16 head inputs), ``{split}_logits.f16``
    (``(N, 7, 160, 160)`` float16 damage logits, only with ``keep_logits``), ``{split}.json`` (image paths, boxes
    per image, ``done``: how many are cached; a rerun continues from there).

    Args:
        yaml: the CarDD ``data.yaml`` (or its folder); split: ``train`` / ``valid`` / ``test``.
        seg: the damage segmenter (default: the shipped CarDD model).
        limit: cache only the first ``limit`` photos (a smoke run).
    Raises:
        ValueError: a photo that is not 640 x 640 (the cache's fixed grid).
    """
    from ..data.coco_dataset import CocoSegmentationDataset
    from ..data.taxonomy import get_taxonomy
    from ..data.yolo import annotation_file
    from ..models.backbone import inference_context
    from ..models.inference import CARDD_SEGMENTER, load_segmenter, to_input_tensor
    from ..models.runtime import use_bf16

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seg = seg or load_segmenter(CARDD_SEGMENTER)
    tax = get_taxonomy("cardd_damage")
    ds = CocoSegmentationDataset([str(annotation_file(f"{yaml}@{split}", split))], "cardd_damage")
    n = min(len(ds), limit or len(ds))
    meta_p = out / f"{split}.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {"n": n, "done": 0, "paths": [], "boxes": []}
    if meta["n"] != n:
        raise ValueError(f"{meta_p} was cached for {meta['n']} photos, not {n}: remove it to start again")
    mode = "r+" if (out / f"{split}_x.f16").exists() else "w+"
    xs = np.memmap(out / f"{split}_x.f16", np.float16, mode, shape=(n, 103, CELLS, CELLS))
    lg = (np.memmap(out / f"{split}_logits.f16", np.float16, mode, shape=(n, 7, SIZE // 4, SIZE // 4))
          if keep_logits else None)
    bf16 = use_bf16("auto")
    for i in range(meta["done"], n):
        image, _, insts = ds.load(i)
        h, w = image.shape[:2]
        if (h, w) != (SIZE, SIZE):
            raise ValueError(f"{ds.image_paths()[i]}: {w}x{h}, the cache needs {SIZE}x{SIZE} photos")
        x = to_input_tensor(image, SIZE)
        with inference_context(bf16):
            y, logits = damage_decoder_pass(seg, seg.backbone(x).features)
            xs[i] = head_input(y, logits)[0].numpy().astype(np.float16)
            if lg is not None:
                lg[i] = logits[0].numpy().astype(np.float16)
        meta["paths"].append(str(ds.image_paths()[i]))
        meta["boxes"].append(_boxes_of(ds, i, insts, h, w, tax))
        meta["done"] = i + 1
        if (i + 1) % 50 == 0 or i + 1 == n:
            xs.flush()
            if lg is not None:
                lg.flush()
            meta_p.write_text(json.dumps(meta))
            log(f"  {split}: {i + 1}/{n} cached")
    return out


def gaussian_radius(h: float, w: float, min_overlap: float = 0.7) -> float:
    """CornerNet's radius (Law & Deng 2018, section 3.2): the smallest of the three radii for which a box whose
    corners move by it still has IoU >= ``min_overlap`` with the ``h`` x ``w`` box (cells)."""
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def centernet_targets(boxes: list[list[list[float]]], num_classes: int = 6, cells: int = CELLS,
                      stride: int = STRIDE, max_objs: int = 64) -> dict[str, torch.Tensor]:
    """CenterNet's training targets of a batch.

    Args:
        boxes: per image ``[[class_index 1..C, x0, y0, x1, y1]]`` in input px.
    Returns:
        ``heat (B, C, cells, cells)`` float32 Gaussians (peak 1 at each centre cell), ``ind (B, max_objs)`` int64
        flat centre cell, ``wh`` / ``off`` ``(B, max_objs, 2)`` float32 size and offset in cells, ``mask (B, max_objs)``
        float32 (1 where an object is).
    """
    B = len(boxes)
    heat = np.zeros((B, num_classes, cells, cells), np.float32)
    ind = np.zeros((B, max_objs), np.int64)
    wh = np.zeros((B, max_objs, 2), np.float32)
    off = np.zeros((B, max_objs, 2), np.float32)
    mask = np.zeros((B, max_objs), np.float32)
    for b, objs in enumerate(boxes):
        for j, (c, x0, y0, x1, y1) in enumerate(objs[:max_objs]):
            w, h = (x1 - x0) / stride, (y1 - y0) / stride
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            px, py = min(int(cx), cells - 1), min(int(cy), cells - 1)
            r = max(0, int(gaussian_radius(math.ceil(h), math.ceil(w))))
            sigma = (2 * r + 1) / 6
            yy, xx = np.ogrid[-r:r + 1, -r:r + 1]
            g = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
            t, l = max(0, py - r), max(0, px - r)
            bt, rt = min(cells, py + r + 1), min(cells, px + r + 1)
            hm = heat[b, int(c) - 1]
            np.maximum(hm[t:bt, l:rt], g[t - py + r: bt - py + r, l - px + r: rt - px + r], out=hm[t:bt, l:rt])
            ind[b, j], wh[b, j], off[b, j], mask[b, j] = py * cells + px, (w, h), (cx - px, cy - py), 1.0
    return {k: torch.from_numpy(v) for k, v in {"heat": heat, "ind": ind, "wh": wh, "off": off, "mask": mask}.items()}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss (Zhou et al. 2019, eq. 1): ``logits`` and ``target``
    ``(B, C, h, w)`` float (target: Gaussians, 1 at centres); summed and divided by the number of centres
    (at least 1). Returns a scalar."""
    p = logits.float().sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -(torch.log(p) * (1 - p) ** alpha * pos).sum()
    neg_loss = -(torch.log(1 - p) * p ** alpha * (1 - target) ** beta * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def _gather(pred: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """``pred (B, 2, h, w)`` at flat cells ``ind (B, K)`` -> ``(B, K, 2)``."""
    B, C = pred.shape[:2]
    return pred.flatten(2).gather(2, ind[:, None].expand(B, C, -1)).transpose(1, 2)


def centernet_loss(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor], size_weight: float = 0.1,
                   off_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Total loss of Zhou et al. 2019 (eq. 4): focal + ``size_weight`` x L1 size + ``off_weight`` x L1 offset, the L1
    terms averaged over the objects. Returns ``{"loss", "heat", "wh", "off"}`` scalars."""
    m = tgt["mask"][..., None]
    n = m.sum().clamp(min=1)
    l_heat = focal_loss(out["heat"], tgt["heat"])
    l_wh = ((_gather(out["wh"].float(), tgt["ind"]) - tgt["wh"]).abs() * m).sum() / (2 * n)
    l_off = ((_gather(out["off"].float(), tgt["ind"]) - tgt["off"]).abs() * m).sum() / (2 * n)
    return {"loss": l_heat + size_weight * l_wh + off_weight * l_off, "heat": l_heat, "wh": l_wh, "off": l_off}


@dataclass
class HeadConfig:
    """Config of a head run (``config.json``; :func:`carcheck.train.engine.start_run`)."""

    out: str
    cache_dir: str
    epochs: int = 12
    batch: int = 16
    lr: float = 2e-3
    width: int = 64
    dilations: tuple = (1, 2, 4, 8)  #: the head's trunk (:class:`~carcheck.models.instances.CenterNetHead`)
    weight_decay: float = 1e-4
    bf16: bool = True  #: bf16 autocast for the head's convolutions (losses in fp32)
    seed: int = 0
    threads: int = 2
    command: str = ""


class _Cache:
    """A cached split: ``x`` memory-mapped ``(N, 103, 80, 80)`` float16, ``boxes`` per image."""

    def __init__(self, folder: str | Path, split: str) -> None:
        meta = json.loads((Path(folder) / f"{split}.json").read_text())
        if meta["done"] != meta["n"]:
            raise ValueError(f"{folder}: {split} is cached for {meta['done']} of {meta['n']} photos; run cache again")
        self.n, self.boxes, self.paths = meta["n"], meta["boxes"], meta["paths"]
        self.x = np.memmap(Path(folder) / f"{split}_x.f16", np.float16, "r", shape=(self.n, 103, CELLS, CELLS))

    def batch(self, idx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        idx = np.sort(np.asarray(idx))
        return torch.from_numpy(self.x[idx].astype(np.float32)), centernet_targets([self.boxes[i] for i in idx])


def _lr(cfg: HeadConfig, epoch: int) -> float:
    """Step schedule of the paper (x0.1 late in training): ``lr`` until 3/4 of the epochs, then ``lr / 10``."""
    return cfg.lr * (0.1 if epoch >= math.ceil(0.75 * cfg.epochs) else 1.0)


def train_head(cfg: HeadConfig, resume: bool = False, stop_after: int | None = None, log=print):
    """Train a :class:`CenterNetHead` on ``cfg.cache_dir``'s ``train`` split, validated (loss) on its ``valid`` split.

    Files in ``cfg.out``: ``config.json``, ``last.pt`` (every epoch), ``metrics.jsonl``, ``best.safetensors`` (lowest
    validation loss). ``stop_after``: end this call after that many epochs (a later call with ``resume`` continues;
    the schedule depends on ``cfg.epochs`` only). Returns the engine's ``FitResult``.

    Raises:
        RunFolderError / ConfigChangedError: as :func:`carcheck.train.engine.start_run`.
    """
    from .engine import MAY_DIFFER, fit, start_run

    out = start_run(cfg, resume=resume, may_differ=MAY_DIFFER)
    train, val = _Cache(cfg.cache_dir, "train"), _Cache(cfg.cache_dir, "valid")
    head = CenterNetHead(103, 6, cfg.width, tuple(cfg.dilations))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)

    def run(x, tgt):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            o = head(x)
        return centernet_loss({k: v.float() for k, v in o.items()}, tgt)

    def train_one_epoch(epoch: int) -> dict:
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, epoch)
        head.train()
        order, tot, parts, steps = rng.permutation(train.n), 0.0, np.zeros(3), 0
        for s in range(0, train.n - cfg.batch + 1, cfg.batch):
            x, tgt = train.batch(order[s:s + cfg.batch])
            losses = run(x, tgt)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            tot += float(losses["loss"].detach())
            parts += [float(losses[k].detach()) for k in ("heat", "wh", "off")]
            steps += 1
        return {"train_loss": tot / steps, **{f"train_{k}": v / steps for k, v in zip(("heat", "wh", "off"), parts)}}

    @torch.no_grad()
    def validate(epoch: int) -> dict:
        head.eval()
        tot, n = 0.0, 0
        for s in range(0, val.n, 32):
            idx = np.arange(s, min(val.n, s + 32))
            x, tgt = val.batch(idx)
            tot += float(run(x, tgt)["loss"]) * len(idx)
            n += len(idx)
        return {"val_loss": tot / n}

    def on_best(epoch: int, rec: dict) -> None:
        save_instance_head(head, out / "best.safetensors", {"epoch": str(epoch), "val_loss": str(rec["val_loss"])})

    start = 0
    if resume and (out / "last.pt").is_file():
        start = int(torch.load(out / "last.pt", map_location="cpu", weights_only=True)["epoch"]) + 1
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    res = fit(out, model=head, optimizer=opt, train_one_epoch=train_one_epoch, validate=validate, epochs=end,
              monitor="val_loss", mode="min", on_best=on_best, generators={"batches": rng}, resume=resume, log=log)
    save_instance_head(head, out / "last.safetensors", {"epoch": str(res.epochs_done - 1)})
    return res


def main(argv: list[str] | None = None) -> None:
    """``python -m carcheck.train.instances cache YAML SPLIT OUT [--logits] [--limit N]`` or
    ``... train OUT_RUN --cache DIR [--epochs N] [--resume]``."""
    ap = argparse.ArgumentParser(description="CenterNet instance head on the frozen damage network")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="cache the frozen network's output for one CarDD split")
    c.add_argument("yaml")
    c.add_argument("split")
    c.add_argument("out")
    c.add_argument("--logits", action="store_true", help="also keep the damage logits (validation split)")
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--threads", type=int, default=2)
    t = sub.add_parser("train", help="train the head on a cache")
    t.add_argument("out")
    t.add_argument("--cache", required=True)
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--stop-after", type=int, default=None, help="end this call after N epochs (resume later)")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--width", type=int, default=64)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "cache":
        torch.set_num_threads(a.threads)
        cache_split(a.yaml, a.split, a.out, keep_logits=a.logits, limit=a.limit)
    else:
        train_head(HeadConfig(out=a.out, cache_dir=a.cache, epochs=a.epochs, batch=a.batch, lr=a.lr, width=a.width,
                              threads=a.threads), resume=a.resume, stop_after=a.stop_after)


if __name__ == "__main__":
    main()
