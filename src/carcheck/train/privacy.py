"""Train the privacy head (:class:`carcheck.models.privacy.PrivacyHead`) on frozen backbone features.

Data: the COCO box sets of ``../shared/data/privacy`` built by its ``build_privacy.sh`` (plates: Open Images;
faces: WIDER FACE street/crowd/vehicle events), train splits only; 10% of each train split (a fixed hash of the
file name) is the tune split for early stopping and the post-processing; the val splits stay for
``bench/accuracy/privacy.py``.

Step 1 (:func:`cache_features`) runs the frozen Lite0 backbone once per photo (longer side 512 px, zero-padded to
512 x 512 in the backbone's normalised space, fp32) and stores the stride-4/8/16 maps as float16 memmaps with the
target masks (per stride-4 cell: the fraction of it inside a box of each kind). Step 2 (:func:`train`) fits the
head on them: BCE + soft Dice per channel, AdamW, random aligned crops and horizontal flips of the cached maps.
Resumable: ``RUN/last.pt`` holds the head, optimiser and epoch (scratch, never shipped); the best tune epoch is
saved as safetensors; :func:`tune_thresholds` then chooses the post-processing on the tune photos.

Run: ``python -m carcheck.train.privacy --data data/privacy --run runs/privacy/head --epochs 24 --max-minutes 14
--tune`` (rerun to resume; ``--tune-only`` to choose the post-processing again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.privacy import INPUT_LONGEST, KINDS, STRIDE, PrivacyHead

__all__ = ["cache_features", "train", "tune_thresholds", "main"]

SIDE = INPUT_LONGEST  # cached grid: SIDE x SIDE network px
LEVELS = ((24, 4), (40, 8), (112, 16))  # (channels, stride) of the maps the head reads
TUNE_RECALL = {"plate": 0.97, "face": 0.90}


def _is_tune(name: str) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10 == 0


def _records(data: Path) -> list[tuple[str, Path, int, list, bool]]:
    """``[(split, path, kind index, [xywh boxes], is_tune)]`` of both train splits."""
    out = []
    for k, kind in enumerate(KINDS):
        folder = data / ("plates" if kind == "plate" else "faces")
        coco = json.loads((folder / "labels_train.json").read_text())
        boxes: dict[int, list] = {}
        for a in coco["annotations"]:
            boxes.setdefault(a["image_id"], []).append(a["bbox"])
        for im in coco["images"]:
            out.append(("train", folder / "images" / Path(im["file_name"]).name, k, boxes.get(im["id"], []),
                        _is_tune(im["file_name"])))
    return out


def _target(boxes, k: int, scale: float) -> np.ndarray:
    """``(2, SIDE/4, SIDE/4)`` float: per stride-4 cell the fraction inside a box of kind ``k``."""
    fine = np.zeros((SIDE, SIDE), np.float32)
    for x, y, w, h in boxes:
        x0, y0, x1, y1 = x * scale, y * scale, (x + w) * scale, (y + h) * scale
        fine[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = 1.0
    t = np.zeros((2, SIDE // STRIDE, SIDE // STRIDE), np.float32)
    t[k] = fine.reshape(SIDE // STRIDE, STRIDE, SIDE // STRIDE, STRIDE).mean(axis=(1, 3))
    return t


def cache_features(data: Path, out: Path) -> None:
    """Backbone maps + targets of every train photo into ``out`` (memmaps; skipped when complete)."""
    from PIL import Image

    from ..models.backbone import build_backbone, fuse_conv_bn
    from ..models.inference import to_input_tensor

    recs = _records(data)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "done.json").exists():
        return
    n = len(recs)
    maps = [np.lib.format.open_memmap(out / f"f{s}.npy", "w+", np.float16, (n, c, SIDE // s, SIDE // s))
            for c, s in LEVELS]
    tgt = np.lib.format.open_memmap(out / "targets.npy", "w+", np.float16, (n, 2, SIDE // STRIDE, SIDE // STRIDE))
    bb = fuse_conv_bn(build_backbone("lite0"))
    t0 = time.time()
    for i, (_, path, k, boxes, _) in enumerate(recs):
        img = np.asarray(Image.open(path).convert("RGB"))
        h, w = img.shape[:2]
        x = to_input_tensor(img, SIDE)
        scale = x.shape[-1] / w
        x = F.pad(x, (0, SIDE - x.shape[-1], 0, SIDE - x.shape[-2]), value=127 / 255)
        with torch.inference_mode():
            f = bb(x.contiguous(memory_format=torch.channels_last)).features
        for m, fi in zip(maps, f[:3]):
            m[i] = fi[0].numpy().astype(np.float16)
        tgt[i] = _target(boxes, k, scale)
        if i % 200 == 0:
            print(f"cache {i}/{n} {time.time() - t0:.0f}s", flush=True)
    for m in (*maps, tgt):
        m.flush()
    (out / "done.json").write_text(json.dumps({"n": n, "tune": [r[4] for r in recs], "kind": [r[2] for r in recs]}))


def _loss(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, t, pos_weight=torch.tensor(4.0))
    p = torch.sigmoid(logits)
    inter = (p * t).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1)
    has = (t.sum(dim=(2, 3)) > 0).float()
    return bce + (dice * has).sum() / has.sum().clamp(min=1)


def _thresholds(head, feats, tgt, idx) -> dict:
    """Per kind, the highest threshold whose cell recall (cells >= half inside a box) reaches TUNE_RECALL."""
    ps, ts = [[], []], [[], []]
    with torch.no_grad():
        for j in range(0, len(idx), 16):
            b = idx[j:j + 16]
            p = torch.sigmoid(head(*(torch.from_numpy(np.asarray(m[b])) for m in feats))).numpy()
            t = np.asarray(tgt[b]).astype(np.float32)
            for k in range(2):
                pos = t[:, k] >= 0.5
                ps[k].append(p[:, k][pos])
                ts[k].append(p[:, k][~pos])
    out = {}
    for k, kind in enumerate(KINDS):
        pos = np.concatenate(ps[k])
        out[kind] = float(np.quantile(pos, 1 - TUNE_RECALL[kind])) if len(pos) else 0.5
    return out


def train(cache: Path, run: Path, epochs: int = 30, lr: float = 2e-3, batch: int = 16, max_minutes: float = 20,
          seed: int = 0) -> dict:
    """Fit the head on the cached maps; resumable from ``run/last.pt``; writes ``run/best.safetensors``.

    Returns:
        ``{"epoch", "tune_loss", "thresholds"}`` of the best epoch so far.
    """
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    meta = json.loads((cache / "done.json").read_text())
    feats = [np.load(cache / f"f{s}.npy", mmap_mode="r") for _, s in LEVELS]
    tgt = np.load(cache / "targets.npy", mmap_mode="r")
    tune = np.array(meta["tune"])
    tr_idx, tu_idx = np.flatnonzero(~tune), np.flatnonzero(tune)
    head = PrivacyHead()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    run.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "best": None}
    if (run / "last.pt").exists():
        ck = torch.load(run / "last.pt", weights_only=False)
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
    sched_total = epochs * (len(tr_idx) // batch)
    t_start = time.time()
    while state["epoch"] < epochs and (time.time() - t_start) < max_minutes * 60:
        head.train()
        perm = rng.permutation(tr_idx)
        losses = []
        for j in range(0, len(perm) - batch + 1, batch):
            step = state["epoch"] * (len(tr_idx) // batch) + j // batch
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(1.0, step / max(1, sched_total))))
            b = np.sort(perm[j:j + batch])
            xs = [torch.from_numpy(np.asarray(m[b])).float() for m in feats]
            t = torch.from_numpy(np.asarray(tgt[b])).float()
            c = int(rng.integers(0, 5)) * 16  # aligned crop (multiple of 16 px in every map)
            cs = [slice(c // s, (SIDE - 64 + c) // s) for _, s in LEVELS]
            xs = [x[..., sl, sl] for x, sl in zip(xs, cs)]
            t = t[..., cs[0], cs[0]]
            if rng.random() < 0.5:
                xs, t = [x.flip(-1) for x in xs], t.flip(-1)
            loss = _loss(head(*xs), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        head.eval()
        with torch.no_grad():
            tl = float(np.mean([float(_loss(head(*(torch.from_numpy(np.asarray(m[tu_idx[j:j + 16]])).float()
                                                   for m in feats)),
                                             torch.from_numpy(np.asarray(tgt[tu_idx[j:j + 16]])).float()))
                                for j in range(0, len(tu_idx), 16)]))
        state["epoch"] += 1
        print(f"epoch {state['epoch']} train {np.mean(losses):.4f} tune {tl:.4f} {time.time() - t_start:.0f}s",
              flush=True)
        if state["best"] is None or tl < state["best"]["tune_loss"]:
            thr = _thresholds(head, feats, tgt, tu_idx)
            state["best"] = {"epoch": state["epoch"], "tune_loss": tl, "thresholds": thr}
            save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(run / "best.safetensors"),
                      metadata={"thresholds": json.dumps(thr), "epoch": str(state["epoch"])})
        torch.save({"head": head.state_dict(), "opt": opt.state_dict(), "state": state}, run / "last.pt")
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": state["epoch"], "train_loss": float(np.mean(losses)), "tune_loss": tl}) + "\n")
    return state["best"]


def _score(regions, boxes, kind, shape) -> tuple[int, int, int]:
    """(covered boxes, boxes, regions touching no box) of one photo; faces count from a 16-px short side."""
    m = np.zeros(shape, bool)
    for r in regions:
        x, y, w, h = r.bbox_xywh
        m[y:y + h, x:x + w] = True
    cov = n = 0
    for x, y, w, h in boxes:
        if kind == "face" and min(w, h) < 16:
            continue
        x0, y0, x1, y1 = int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h))
        cov += m[y0:y1, x0:x1].mean() >= 0.7
        n += 1
    false = sum(1 for r in regions if not any(r.bbox_xywh[0] < x + w and x < r.bbox_xywh[0] + r.bbox_xywh[2] and
                                              r.bbox_xywh[1] < y + h and y < r.bbox_xywh[1] + r.bbox_xywh[3]
                                              for x, y, w, h in boxes))
    return int(cov), n, false


def choose(table: list[dict], slack: dict) -> dict:
    """Per kind, the row of ``table`` with the fewest false regions among those within ``slack[kind]`` of the best
    coverage (ties: the higher coverage)."""
    chosen = {}
    for kind in KINDS:
        rows = [r for r in table if r["kind"] == kind]
        best = max(r["covered"] for r in rows)
        chosen[kind] = min((r for r in rows if r["covered"] >= best - slack[kind] - 1e-9),
                           key=lambda r: (r["false_per_photo"], -r["covered"]))
    return chosen


def tune_thresholds(data: Path, run: Path, lows=(0.05, 0.1, 0.2, 0.3, 0.5), highs=(0.3, 0.5, 0.7, 0.85),
                    grows=(0.15, 0.3), slack: dict | None = None) -> dict:
    """Choose each kind's post-processing (extent threshold, accept threshold, grow) on the tune photos, end to end
    (backbone, head, regions): the fewest regions touching no labelled box among the settings whose coverage
    (>= 70% of a box inside the regions; faces from a 16-px short side) is within ``slack`` of the best (default
    plates 0.03, faces 0.04: a region that is not a face or a plate blurs part of the car, perhaps its damage).
    Written into ``run/best.safetensors``'s metadata; the whole table into ``run/tune_table.json``.

    Returns:
        ``{"chosen": {kind: {...}}, "table": [{kind, low, high, grow, covered, false_per_photo}]}``.
    """
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from ..models.privacy import PrivacyDetector, regions_from_probs

    slack = slack or {"plate": 0.03, "face": 0.04}
    det = PrivacyDetector(run / "best.safetensors")
    photos = []
    for _, path, k, boxes, is_tune in _records(data):
        if is_tune:
            img = np.asarray(Image.open(path).convert("RGB"))
            p, scale = det.probs(img)
            photos.append((KINDS[k], p, scale, img.shape[:2], boxes))
    table = []
    for kind in KINDS:
        rows = []
        for lo in lows:
            for hi in (h for h in highs if h >= lo):
                for g in grows:
                    c = n = f = m = 0
                    for kd, p, scale, shape, boxes in photos:
                        if kd != kind:
                            continue
                        off = {k: 2.0 for k in KINDS if k != kind}  # the other kind: no regions
                        regs = regions_from_probs(p, scale, shape, {kind: lo, **off}, {kind: hi}, {kind: g})
                        ci, ni, fi = _score(regs, boxes, kind, shape)
                        c, n, f, m = c + ci, n + ni, f + fi, m + 1
                    rows.append({"kind": kind, "low": lo, "high": hi, "grow": g, "covered": round(c / max(1, n), 4),
                                 "false_per_photo": round(f / max(1, m), 3)})
        table += rows
    chosen = choose(table, slack)
    meta = {"thresholds": json.dumps({k: chosen[k]["low"] for k in KINDS}),
            "accept": json.dumps({k: chosen[k]["high"] for k in KINDS}),
            "grow": json.dumps({k: chosen[k]["grow"] for k in KINDS}),
            "tune": json.dumps({"chosen": chosen, "photos": len(photos), "slack": slack})}
    save_file(load_file(str(run / "best.safetensors")), str(run / "best.safetensors"), metadata=meta)
    (run / "tune_table.json").write_text(json.dumps(table, indent=1))
    print(json.dumps(chosen, indent=1))
    return {"chosen": chosen, "table": table}


def main(argv=None) -> None:
    """CLI: cache the features (once), then train for up to ``--max-minutes`` (rerun to resume)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/privacy"))
    ap.add_argument("--run", type=Path, default=Path("runs/privacy/head"))
    ap.add_argument("--cache", type=Path, default=Path("runs/privacy/cache"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--max-minutes", type=float, default=20)
    ap.add_argument("--tune", action="store_true", help="then choose the post-processing on the tune photos")
    ap.add_argument("--tune-only", action="store_true", help="only choose the post-processing (head trained)")
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    cache_features(a.data, a.cache)
    if not a.tune_only:
        print(json.dumps(train(a.cache, a.run, epochs=a.epochs, max_minutes=a.max_minutes)))
    if a.tune or a.tune_only:
        tune_thresholds(a.data, a.run)


if __name__ == "__main__":
    main()
