"""Damage instances from the shipped damage network: a CenterNet head on its frozen decoder features.

Design (issue 27 item 1; Zhou et al., "Objects as Points", 2019, section 3): one small head reads the
shipped CarDD damage model's decoder output (the FPN features at stride 4, average-pooled to stride 8)
concatenated with its damage logits (pooled the same way) and predicts, per stride-8 cell,

- a centre heatmap per damage class ``Y_hat`` (6 CarDD classes; trained with the paper's eq. 1 focal loss),
- the box size ``(w, h)`` in input pixels / 8 (eq. 3, L1),
- the centre's sub-cell offset (eq. 2, L1).

Detections are the 3x3 local maxima of the heatmap (the paper's max-pool "NMS", section 4), top ``k``.
Masks come from the damage model's own semantic map (:func:`masks_in_boxes`): the pixels of the box's class
inside the box, restricted to the connected components of that class under the box, so two touching dents
(one merged component) stay two instances through their two boxes. The backbone, its fine-tuned stages and
the decoder stay frozen and are shared with the semantic map: the head adds only its own convolutions,
the peak decoding and the masks.

The head file (``instance_head_cardd_lite0.safetensors``) holds the head's weights (float16) and metadata
``{"kind": "centernet", "in_channels", "width", "classes", "stride", "decoder_of"}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["INSTANCE_HEAD", "CenterNetHead", "damage_decoder_pass", "head_input", "decode_centers",
           "masks_in_boxes", "group_by_centres", "load_instance_head", "save_instance_head", "HeadInstances"]

#: The shipped instance head (trained on CarDD train, settings chosen on CarDD valid; its model card beside it).
INSTANCE_HEAD = Path(__file__).parent / "weights" / "instance_head_cardd_lite0.safetensors"
#: Output stride of the head (the decoder's stride-4 map, average-pooled 2x2).
STRIDE = 8


class CenterNetHead(nn.Module):
    """The CenterNet head (Zhou et al. 2019, section 4 "Implementation details": a 3x3 convolution, ReLU and a
    1x1 convolution per output), here with a shared trunk of 3x3 convolutions dilated 1, 2, 4, 8 (a view of
    31 x 31 cells, 248 px: a centre and a size need the damage's whole extent, which the decoder's features,
    trained for per-pixel classes, do not carry; with dilations 1, 2 only the head's heatmaps stayed flat, peak
    ~0.1, and valid mask AP was 0.009).

    Args:
        in_channels: channels of :func:`head_input` (decoder width + damage classes incl. background: 96 + 7).
        num_classes: damage classes (6 for CarDD; background excluded).
        width: trunk width.
        dilations: one 3x3 convolution (+ ReLU) per entry, dilated by it.

    ``forward(x)``: ``(B, in_channels, h, w)`` float -> ``{"heat": (B, num_classes, h, w) logits (sigmoid gives
    Y_hat), "wh": (B, 2, h, w) box width and height in cells, "off": (B, 2, h, w) centre offset in cells}``.
    """

    def __init__(self, in_channels: int = 103, num_classes: int = 6, width: int = 64,
                 dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.width, self.dilations = in_channels, num_classes, width, tuple(dilations)
        layers, cin = [], in_channels
        for d in self.dilations:
            layers += [nn.Conv2d(cin, width, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
            cin = width
        self.trunk = nn.Sequential(*layers)
        self.heat = nn.Conv2d(width, num_classes, 1)
        self.wh = nn.Conv2d(width, 2, 1)
        self.off = nn.Conv2d(width, 2, 1)
        # the paper's heatmap bias init (-2.19: an initial sigmoid of 0.1, as in its code and in focal-loss RetinaNet)
        nn.init.constant_(self.heat.bias, -2.19)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.trunk(x)
        return {"heat": self.heat(y), "wh": self.wh(y), "off": self.off(y)}


def _damage_model(seg):
    """The :class:`~carcheck.models.segmentation.CarSegmenter` serving the ``damage`` task of ``seg`` (itself or the
    owner inside a :class:`~carcheck.models.inference.ComposedSegmenter`). Raises KeyError: no damage head."""
    if hasattr(seg, "owner"):
        if "damage" not in seg.owner:
            raise KeyError("model has no 'damage' head")
        return seg.models[seg.owner["damage"]]
    if "damage" not in seg.heads:
        raise KeyError("model has no 'damage' head")
    return seg


def damage_decoder_pass(seg, feats) -> tuple[torch.Tensor, torch.Tensor]:
    """The damage model's decoder on one backbone pass, as :meth:`CarSegmenter.decode` runs it in eval mode
    (its fine-tuned stages under the caller's autocast, decoder and head in fp32, the logit adjustment added),
    but keeping the decoder's own output.

    Args:
        seg: a segmenter with a ``damage`` head (or a composed set of them).
        feats: the backbone's 4 feature maps (:class:`~carcheck.models.backbone.FeatureMaps`).
    Returns:
        ``(y, logits)``: decoder features ``(B, 96, H/4, W/4)`` float32 and damage logits ``(B, 7, H/4, W/4)``
        float32 (background first; not upsampled).
    """
    m = _damage_model(seg)
    if m.tail is not None:
        feats = m.tail(feats)
    with torch.autocast(feats[0].device.type, enabled=False):
        y = m.decoder([f.float() for f in feats])
        logits = m.heads["damage"](y).float()
        bias = m.logit_bias.get("damage")
        if bias is not None:
            logits = logits + bias.view(1, -1, 1, 1)
    return y, logits


def head_input(y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The head's input: decoder features and damage logits (both ``(B, C, H/4, W/4)``) average-pooled 2x2 to
    stride 8 (ceil mode) and concatenated: ``(B, C_y + C_logits, ceil(H/8), ceil(W/8))`` float32."""
    return F.avg_pool2d(torch.cat([y, logits], 1), 2, ceil_mode=True)


def decode_centers(out: dict[str, torch.Tensor], k: int = 100, threshold: float = 0.05,
                   stride: int = STRIDE) -> list[tuple[int, float, tuple[float, float, float, float]]]:
    """Boxes of one image from the head's output (Zhou et al. 2019, section 4: 3x3 max-pool peaks, top ``k``).

    Args:
        out: :class:`CenterNetHead` output for a batch of one.
        k: most detections kept; threshold: lowest peak score kept (sigmoid of the heat logit).
        stride: input pixels per cell.
    Returns:
        ``[(class_index 1..C, score, (x0, y0, x1, y1) in input px)]``, best first.
    """
    heat = out["heat"][0].float().sigmoid()
    peaks = heat * (F.max_pool2d(heat[None], 3, stride=1, padding=1)[0] == heat)
    c, h, w = peaks.shape
    scores, idx = peaks.flatten().topk(min(k, peaks.numel()))
    keep = scores >= threshold
    scores, idx = scores[keep], idx[keep]
    cls, rem = idx // (h * w), idx % (h * w)
    ys, xs = rem // w, rem % w
    wh, off = out["wh"][0].float(), out["off"][0].float()
    dets = []
    for s, ci, yi, xi in zip(scores.tolist(), cls.tolist(), ys.tolist(), xs.tolist()):
        cx, cy = (xi + float(off[0, yi, xi])) * stride, (yi + float(off[1, yi, xi])) * stride
        bw, bh = max(float(wh[0, yi, xi]), 0.0) * stride, max(float(wh[1, yi, xi]), 0.0) * stride
        dets.append((ci + 1, s, (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)))
    return dets


def masks_in_boxes(label: np.ndarray, dets, min_cover: float = 0.2, empty: str = "drop",
                   min_area: int = 4, exclusive: bool = True, probs: np.ndarray | None = None,
                   score: str = "peak") -> list[tuple[int, np.ndarray, float]]:
    """Instance masks from the semantic damage map inside the detected boxes.

    For a box of class c: the connected components (8-connected) of ``label == c`` that meet the box; a component
    counts as under the box when its part inside the box is at least ``min_cover`` of its area, or it is the
    component with the most pixels in the box; the mask is those components' pixels inside the box. Touching
    damages of one class (one component) become one instance per box.

    Args:
        label: ``(H, W)`` int semantic argmax (0 = background), in the photo's pixels.
        dets: ``[(class_index, score, (x0, y0, x1, y1))]`` in the same pixels (:func:`decode_centers`, scaled).
        min_cover: see above (0: every component meeting the box).
        empty: a box without its class's pixels: ``drop`` it, or ``box`` (the filled box is its mask).
        min_area: masks below this many pixels are dropped.
        exclusive: a pixel inside two boxes of one class goes to the box whose centre is nearer (distance in box
            half-sizes), so overlapping boxes of touching damages give disjoint masks.
        probs / score: ``peak`` (the heatmap peak is the instance's score) or ``peak_x_mean`` (times the mean
            probability of the class over the mask; ``probs`` ``(C, H, W)`` float class probabilities needed).
    Returns:
        ``[(class_index, mask (H, W) bool, score, box (x, y, w, h) px clipped to the photo)]``.
    Raises:
        ValueError: unknown ``empty`` or ``score``, or ``peak_x_mean`` without ``probs``.
    """
    if empty not in ("drop", "box"):
        raise ValueError(f"empty must be 'drop' or 'box', not {empty!r}")
    if score not in ("peak", "peak_x_mean") or (score == "peak_x_mean" and probs is None):
        raise ValueError(f"score must be 'peak', or 'peak_x_mean' with probs, not {score!r}")
    H, W = label.shape
    comps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    owner = _nearest_box(dets, H, W) if exclusive else None
    out = []
    for j, (c, s, (x0, y0, x1, y1)) in enumerate(dets):
        win_box = _pixel_window((x0, y0, x1, y1), H, W)
        if win_box is None:
            continue
        a0, b0, a1, b1 = win_box
        if c not in comps:
            n, cc, stats, _ = cv2.connectedComponentsWithStats((label == c).astype(np.uint8), connectivity=8)
            comps[c] = (cc, stats[:, cv2.CC_STAT_AREA])
        cc, areas = comps[c]
        win = cc[b0:b1, a0:a1]
        ids, counts = np.unique(win[win > 0], return_counts=True)
        mask = np.zeros((H, W), bool)
        if ids.size:
            keep = (counts >= min_cover * areas[ids]) | (counts == counts.max())
            mask[b0:b1, a0:a1] = np.isin(win, ids[keep])
        elif empty == "box":
            mask[b0:b1, a0:a1] = True
        if owner is not None:
            mask[b0:b1, a0:a1] &= owner[c][b0:b1, a0:a1] == j
        if mask.sum() >= min_area:
            if score == "peak_x_mean":
                s = s * float(probs[c][mask].mean())
            bx0, by0 = max(0.0, x0), max(0.0, y0)
            out.append((c, mask, s, (bx0, by0, min(float(W), x1) - bx0, min(float(H), y1) - by0)))
    return out


def group_by_centres(label: np.ndarray, probs: np.ndarray, dets, min_peak: float = 0.2,
                     min_area: int = 16) -> list[tuple[int, np.ndarray, float]]:
    """Instances by grouping the semantic map around the head's centres (the grouping of Panoptic-DeepLab,
    Cheng et al., CVPR 2020, section 3.2, with the box's centre and size instead of a per-pixel offset head).

    Each 8-connected component of a class's pixels (``label == c``, at least ``min_area`` px) is one instance,
    unless two or more centres of that class (peaks >= ``min_peak``) lie in it: then its pixels are split among
    them, each pixel to the nearest centre in half-sizes of that centre's box. A component without a centre keeps
    the components' score (mean class probability), a centre's instance its peak.

    Args:
        label: ``(H, W)`` int semantic argmax; probs: ``(C, H, W)`` float probabilities; dets: as
            :func:`masks_in_boxes` (photo pixels).
    Returns:
        ``[(class_index, mask (H, W) bool, score, box (x, y, w, h))]``, the box the mask's bounding box.
    """
    out = []
    for c in np.unique(label):
        if c == 0:
            continue
        cents = [(s, (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1.0), max((y1 - y0) / 2, 1.0))
                 for cc, s, (x0, y0, x1, y1) in dets if cc == c and s >= min_peak]
        n, comp, stats, _ = cv2.connectedComponentsWithStats((label == c).astype(np.uint8), connectivity=8)
        for k in range(1, n):
            x, y, w, h, area = stats[k]
            if area < min_area:
                continue
            win = comp[y:y + h, x:x + w] == k
            inside = [ct for ct in cents if x <= ct[1] < x + w and y <= ct[2] < y + h
                      and win[int(ct[2]) - y, int(ct[1]) - x]]
            if len(inside) < 2:
                m = np.zeros(label.shape, bool)
                m[y:y + h, x:x + w] = win
                score = inside[0][0] if inside else float(probs[c][m].mean())
                out.append((int(c), m, score, (float(x), float(y), float(w), float(h))))
                continue
            yy, xx = np.mgrid[y:y + h, x:x + w]
            d = np.stack([((xx + 0.5 - cx) / hw) ** 2 + ((yy + 0.5 - cy) / hh) ** 2 for _, cx, cy, hw, hh in inside])
            near = d.argmin(0)
            for j, (s, *_rest) in enumerate(inside):
                part = win & (near == j)
                if part.sum() < min_area:
                    continue
                m = np.zeros(label.shape, bool)
                m[y:y + h, x:x + w] = part
                ys, xs = np.nonzero(part)
                out.append((int(c), m, s, (float(x + xs.min()), float(y + ys.min()),
                                           float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))))
    return out


def _pixel_window(box, H: int, W: int) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` float px -> the covered pixel window ``(a0, b0, a1, b1)`` clipped to an ``H x W``
    photo (floor / ceil), or None when nothing of it lies inside."""
    x0, y0, x1, y1 = box
    a0, b0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    a1, b1 = min(W, int(math.ceil(x1))), min(H, int(math.ceil(y1)))
    return None if a1 <= a0 or b1 <= b0 else (a0, b0, a1, b1)


def _nearest_box(dets, H: int, W: int) -> dict[int, np.ndarray]:
    """Per class, ``(H, W)`` int32: the index in ``dets`` of the box of that class whose centre is nearest (in
    half-sizes of the box) to each pixel inside any box of the class; -1 outside every box."""
    best: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for j, (c, _, (x0, y0, x1, y1)) in enumerate(dets):
        win_box = _pixel_window((x0, y0, x1, y1), H, W)
        if win_box is None:
            continue
        a0, b0, a1, b1 = win_box
        if c not in best:
            best[c] = (np.full((H, W), np.inf, np.float32), np.full((H, W), -1, np.int32))
        dist, idx = best[c]
        cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        yy, xx = np.ogrid[b0:b1, a0:a1]
        d = ((xx + 0.5 - cx) / hw) ** 2 + ((yy + 0.5 - cy) / hh) ** 2
        win = dist[b0:b1, a0:a1]
        closer = d < win
        win[closer] = d[closer]
        idx[b0:b1, a0:a1][closer] = j
    return {c: idx for c, (_, idx) in best.items()}


class HeadInstances:
    """The instance head ready to run beside the semantic map: ``(head_input, photo size) -> instances``.

    Args:
        head: a trained :class:`CenterNetHead` (eval mode).
        k / threshold: :func:`decode_centers`; min_cover / empty / exclusive / score: :func:`masks_in_boxes`.
        mode: ``boxes`` (masks in the head's boxes, :func:`masks_in_boxes`) or ``grouping`` (the semantic map's
            components split among the head's centres, :func:`group_by_centres`, peaks >= ``min_peak``).

    Raises:
        ValueError: unknown ``mode``.

    ``__call__(x, label, input_hw, probs=None)``: ``x`` the :func:`head_input` ``(1, C, h, w)``, ``label`` the
    ``(H, W)`` semantic argmax at the photo's size, ``input_hw`` the network input's ``(height, width)`` px, ``probs``
    the ``(C, H, W)`` probabilities (needed for ``score="peak_x_mean"``) ->
    ``[(class_index, mask (H, W) bool, score, box (x, y, w, h))]`` (:func:`masks_in_boxes`).
    """

    def __init__(self, head: CenterNetHead, k: int = 100, threshold: float = 0.05, min_cover: float = 0.2,
                 empty: str = "drop", exclusive: bool = True, score: str = "peak", mode: str = "boxes",
                 min_peak: float = 0.2) -> None:
        if mode not in ("boxes", "grouping"):
            raise ValueError(f"mode must be 'boxes' or 'grouping', not {mode!r}")
        self.head, self.k, self.threshold, self.min_cover, self.empty = head.eval(), k, threshold, min_cover, empty
        self.exclusive, self.score, self.mode, self.min_peak = exclusive, score, mode, min_peak

    def boxes(self, x: torch.Tensor, out_hw: tuple[int, int], input_hw: tuple[int, int]):
        """Boxes ``[(class_index, score, (x0, y0, x1, y1))]`` in the photo's pixels (``out_hw``)."""
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
            out = self.head(x.float())
        sy, sx = out_hw[0] / input_hw[0], out_hw[1] / input_hw[1]
        return [(c, s, (x0 * sx, y0 * sy, x1 * sx, y1 * sy))
                for c, s, (x0, y0, x1, y1) in decode_centers(out, self.k, self.threshold)]

    def __call__(self, x: torch.Tensor, label: np.ndarray, input_hw: tuple[int, int], probs: np.ndarray | None = None):
        if self.mode == "grouping":
            if probs is None:
                raise ValueError("grouping needs the class probabilities (probs)")
            return group_by_centres(label, probs, self.boxes(x, label.shape, input_hw), self.min_peak)
        return masks_in_boxes(label, self.boxes(x, label.shape, input_hw), self.min_cover, self.empty,
                              exclusive=self.exclusive, probs=probs, score=self.score)


def save_instance_head(head: CenterNetHead, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``head`` as float16 safetensors with its metadata (plus ``extra``, e.g. the chosen decoding
    settings under ``decode``). Returns the path."""
    from safetensors.torch import save_file

    meta = {"kind": "centernet", "in_channels": str(head.in_channels), "classes": str(head.num_classes),
            "width": str(head.width), "dilations": json.dumps(list(head.dilations)), "stride": str(STRIDE), "decoder_of": "segmenter_damage_cardd_lite0",
            **{k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (extra or {}).items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in head.state_dict().items()}, str(path), metadata=meta)
    return path


def load_instance_head(path: str | Path = INSTANCE_HEAD, **overrides) -> HeadInstances:
    """A :class:`HeadInstances` from a head file; its ``decode`` metadata (``k``, ``threshold``, ``min_cover``,
    ``empty``, ``exclusive``, ``score``, ``mode``, ``min_peak``) is the default, ``overrides`` win.

    Raises:
        FileNotFoundError: no such file. ValueError: not a carcheck CenterNet head.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: instance head weights not found")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("kind") != "centernet":
        raise ValueError(f"{path}: not a carcheck instance head (metadata kind {meta.get('kind')!r})")
    head = CenterNetHead(int(meta["in_channels"]), int(meta["classes"]), int(meta["width"]),
                         tuple(json.loads(meta.get("dilations", "[1, 2]"))))
    head.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    settings = {**json.loads(meta.get("decode", "{}")), **overrides}
    return HeadInstances(head, **settings)
