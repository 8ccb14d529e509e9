"""Image-level heads on the shared backbone's pooled features: classifiers and the verification
embedding, their safetensors files, and the full image -> logits module Grad-CAM needs.

A head reads the pooled 1280-d (Lite0) vector of the one backbone pass each photo gets in
:mod:`carcheck.pipeline.assess`, so a head costs one small MLP on top of that pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .backbone import EfficientNetLiteBackbone

__all__ = ["ClassifierHead", "EmbeddingHead", "LastStageBranch", "ImageHead", "StandaloneNet", "HeadInfo", "save_head",
           "load_head", "BackboneClassifier", "SHIPPED_CLASSIFIERS"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: Shipped image-level heads by task (files that are absent are simply not used).
SHIPPED_CLASSIFIERS = {
    "presence": WEIGHTS_DIR / "classifier_presence_lite0.safetensors",
    "damaged": WEIGHTS_DIR / "classifier_damaged_lite0.safetensors",
    "severity": WEIGHTS_DIR / "classifier_severity_lite0.safetensors",
    "make_model": WEIGHTS_DIR / "classifier_make_model_lite0.safetensors",
    # linear 32-model head used only for its max logit: "is this one of the known models?"
    "make_model_ood": WEIGHTS_DIR / "classifier_make_model_ood_lite0.safetensors",
    "verification": WEIGHTS_DIR / "embedding_verification_lite0.safetensors",
    # what the photo shows (exterior full / close-up, interior, document, VIN / dashboard, no vehicle): issue 16
    "photo_type": WEIGHTS_DIR / "classifier_photo_type_lite0.safetensors",
    # the same design trained with damaged cars too: only adds photos to the damage search (issue 26)
    "photo_type_damage_aware": WEIGHTS_DIR / "classifier_photo_type_damage_aware_lite0.safetensors",
}


class ClassifierHead(nn.Module):
    """MLP classifier on pooled backbone features.

    Args:
        in_features: D of the pooled vector (1280 for Lite0).
        num_classes: C.
        hidden: width of the hidden layer; 0 for a linear classifier.
        dropout: dropout before each linear layer (training only).

    Input ``(B, D)`` float32 -> logits ``(B, C)`` float32.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or in_features, num_classes))
        self.net = nn.Sequential(*layers)
        self.in_features, self.num_classes, self.hidden = in_features, num_classes, hidden

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled.float())


class EmbeddingHead(nn.Module):
    """Siamese verification head (shared weights for both photos): pooled features -> 128-d
    L2-normalised embedding; a pair is scored by a learned linear layer on the element-wise L1
    distance ``|e_a - e_b|`` followed by a sigmoid (Koch et al. 2015, the part-classification and
    verification paper's Siamese design).

    Args:
        in_features: D of the pooled vector; dim: embedding size (128 as in the paper).
    """

    def __init__(self, in_features: int, dim: int = 128, hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                   nn.Linear(hidden, dim))
        self.compare = nn.Linear(dim, 1)
        self.in_features, self.dim, self.hidden = in_features, dim, hidden

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` -> ``(B, dim)`` float32 unit vectors."""
        return F.normalize(self.embed(pooled.float()), dim=-1)

    def pair_logit(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """Same-vehicle logit ``(B,)`` of embedding pairs ``(B, dim)`` (sigmoid -> probability)."""
        return self.compare((ea - eb).abs()).squeeze(-1)

    def distance(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """Verification distance ``1 - P(same)`` in [0, 1], ``(B,)``, of embedding pairs ``(B, dim)``."""
        return 1 - torch.sigmoid(self.pair_logit(ea, eb))


class LastStageBranch(nn.Module):
    """A trainable copy of the backbone's last stage (stride 16 -> 32 blocks, head conv, BN,
    ReLU6, global average pooling), for heads that need fine-tuned features (fine-grained
    make/model) while the shared pass stays frozen: the branch starts from the shared pass's
    stride-16 map, so only the last stage runs twice.

    Input: stride-16 features ``(B, C16, H/16, W/16)`` (112 channels for Lite0) -> ``(B, 1280)`` float32.
    """

    def __init__(self, backbone: EfficientNetLiteBackbone) -> None:
        super().__init__()
        import copy

        net = backbone.net
        start = backbone.stage_ends[2] + 1
        self.blocks = copy.deepcopy(nn.ModuleList(net._blocks[start:]))
        self.conv_head = copy.deepcopy(net._conv_head)
        self.bn = copy.deepcopy(net._bn1)
        # the Lite models' activation (ReLU6); the package's drop-connect schedule is not used here
        self.act = nn.ReLU6(inplace=False)

    def forward(self, feat16: torch.Tensor) -> torch.Tensor:
        y = feat16.float()  # the branch runs in fp32 (bf16 features from the shared pass are upcast)
        for blk in self.blocks:
            y = blk(y)
        y = self.act(self.bn(self.conv_head(y)))
        return y.float().mean(dim=(2, 3))


class ImageHead(nn.Module):
    """What an image-level head file holds: a head, optionally with a :class:`LastStageBranch`.

    ``forward(out)`` takes the shared :class:`~carcheck.models.backbone.BackboneOutput` (run with
    ``with_pooled=True``) and returns the head's output: logits ``(B, C)`` for a classifier,
    embeddings ``(B, dim)`` for an embedding head.
    """

    def __init__(self, head: nn.Module, branch: LastStageBranch | None = None) -> None:
        super().__init__()
        self.head, self.branch = head, branch

    def pooled(self, out) -> torch.Tensor:
        """The head's input ``(B, D)`` float32 from a backbone output."""
        if self.branch is not None:
            return self.branch(out.features[2])
        if out.pooled is None:
            raise ValueError("run the backbone with with_pooled=True for image-level heads")
        return out.pooled.float()

    def forward(self, out) -> torch.Tensor:
        return self.head(self.pooled(out))

    def distance(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """Pair distance of two embedding batches ``(B, dim)`` -> ``(B,)`` (embedding heads only)."""
        return self.head.distance(ea, eb)


class StandaloneNet(nn.Module):
    """An image-level model with its OWN fine-tuned backbone, for tasks where the shared frozen
    pass is not discriminative enough (measured: vehicle re-identification, bench/accuracy/identity.py).
    It costs a second, small backbone pass per photo at ``input_size``.

    Two kinds:

    - classifier (``num_classes > 0``): pooled features -> dropout -> linear -> logits ``(B, C)``.
    - embedding (``num_classes == 0``): pooled features -> BatchNorm1d "BNNeck" -> L2-normalised
      embedding ``(B, D)``; pairs are compared by cosine distance ``1 - e_a . e_b`` in [0, 2]
      (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification",
      CVPR-W 2019: triplet loss before the neck, ID cross-entropy after it).

    Args:
        backbone: an :class:`EfficientNetLiteBackbone` (fine-tuned as a whole); its ImageNet
            classifier is replaced by an identity (so ``with_logits`` no longer applies to it).
        num_classes: C for a classifier, 0 for an embedding.
        input_size: ``(H, W)`` px every photo is resized to (aspect ratio not kept, as in training).
        flip_tta: average the outputs (logits, or neck features before normalising) of the photo
            and its mirror image.

    ``forward(x)``: ``(B, 3, h, w)`` float in [0, 1], any size -> logits or embeddings, float32.
    """

    def __init__(self, backbone: EfficientNetLiteBackbone, num_classes: int = 0, input_size: tuple[int, int] = (224, 224),
                 flip_tta: bool = True, dropout: float = 0.3) -> None:
        super().__init__()
        backbone.net._fc = nn.Identity()  # the ImageNet classifier is never used here: 1.28 M weights fewer per file
        self.backbone = backbone
        self.num_classes, self.input_size, self.flip_tta = num_classes, tuple(input_size), flip_tta
        if num_classes:
            self.drop = nn.Dropout(dropout)
            self.fc = nn.Linear(backbone.num_features, num_classes)
        else:
            self.neck = nn.BatchNorm1d(backbone.num_features)
            self.neck.bias.requires_grad_(False)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(B, F)`` float32 of photos already at ``input_size``."""
        return self.backbone(x.contiguous(memory_format=torch.channels_last), with_pooled=True).pooled

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features -> logits ``(B, C)`` (classifier) or the neck's features (embedding, not normalised)."""
        if self.num_classes:
            return self.fc(self.drop(pooled.float()))
        return self.neck(pooled.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x.float(), size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        xs = torch.cat([x, x.flip(-1)]) if self.flip_tta else x
        y = self.project(self.pooled(xs)).float()
        if self.flip_tta:
            b = x.shape[0]
            y = (y[:b] + y[b:]) / 2  # mean logits (classifier) / mean neck features (embedding)
        return y if self.num_classes else F.normalize(y, dim=-1)

    @staticmethod
    def distance(ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        """Cosine distance ``1 - e_a . e_b`` ``(B,)`` of unit embeddings ``(B, D)``."""
        return 1 - (ea.float() * eb.float()).sum(-1)


@dataclass
class HeadInfo:
    """Metadata stored in a head's safetensors file.

    Attributes:
        kind: ``"classifier"`` or ``"embedding"``.
        task: e.g. ``"presence"``, ``"make_model"``.
        classes: class names in logit order (empty for embeddings).
        backbone: backbone variant the pooled features come from.
        longest: input size (longer side, px) the head was trained at.
        hidden / dim: layer sizes to rebuild the head.
        ood: out-of-distribution rule: ``{"score": "max_logit"|"msp", "threshold": float}``; a
            photo scoring below the threshold is out of scope (empty: no rule). Optional
            ``"threshold_by_precision": {"fp32": t, "bf16": t}``: the same rule recalibrated on
            outputs of that precision (:meth:`ood_threshold`; bench/speed/precision_check.py).
        threshold: decision threshold for binary heads (probability of ``classes[1]``) or the
            verification distance threshold; None -> argmax / 0.5.
        extra: anything else (training command, metrics) as JSON-able values.
    """

    kind: str
    task: str
    classes: list[str] = field(default_factory=list)
    backbone: str = "lite0"
    longest: int = 512
    hidden: int = 256
    dim: int = 128
    ood: dict = field(default_factory=dict)
    threshold: float | None = None
    extra: dict = field(default_factory=dict)

    def ood_threshold(self, precision: str | None = None) -> float | None:
        """The OOD threshold for outputs computed in ``precision`` (``fp32`` | ``bf16``): the
        recalibrated one where the file has it, else the stored ``ood["threshold"]``; None without a rule."""
        if not self.ood:
            return None
        return self.ood.get("threshold_by_precision", {}).get(precision, self.ood.get("threshold"))


#: Suffix of the per-output-channel scale stored beside an int8 weight tensor.
_INT8_SCALE = ".int8_scale"


def _quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 weights (zero point 0, scale = max |w| / 127):
    ``(C, ...)`` float -> ``(int8 tensor of the same shape, (C,) float32 scales)``."""
    w = w.detach().float()
    scale = w.reshape(w.shape[0], -1).abs().amax(1).clamp(min=1e-12) / 127
    q = torch.round(w / scale.view(-1, *([1] * (w.dim() - 1)))).clamp(-127, 127).to(torch.int8)
    return q, scale


def _dequantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32 state dict from a file's tensors (int8 weights times their per-channel scales)."""
    out = {}
    for k, v in state.items():
        if k.endswith(_INT8_SCALE):
            continue
        scale = state.get(k + _INT8_SCALE)
        out[k] = v.float() if scale is None else v.float() * scale.float().view(-1, *([1] * (v.dim() - 1)))
    return out


def save_head(head: ImageHead | StandaloneNet, info: HeadInfo, path: str | Path) -> Path:
    """Write an :class:`ImageHead`'s or :class:`StandaloneNet`'s weights and its :class:`HeadInfo`
    as safetensors (``info.extra["branch"]`` records whether it has a branch,
    ``info.extra["standalone"]`` whether it has its own backbone, with its ``input_size`` and
    ``flip_tta``).

    Storage, to keep files small: float16; a StandaloneNet's convolution and linear weights (the
    bulk of a backbone) as int8 with one float32 scale per output channel (weight-only, symmetric;
    :func:`load_head` dequantises to float32), about 3.5 MB for Lite0 instead of 6.8 MB.
    """
    standalone = isinstance(head, StandaloneNet)
    if standalone:
        info.extra.update(standalone=True, branch=False, input_size=list(head.input_size), flip_tta=head.flip_tta,
                          weights="int8 per output channel for conv/linear weights, float16 otherwise")
        info.backbone = head.backbone.variant
    else:
        info.extra["branch"] = head.branch is not None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in head.state_dict().items():
        if standalone and v.is_floating_point() and v.dim() >= 2 and v.numel() >= 256:
            state[k], state[k + _INT8_SCALE] = _quantize_int8(v)
        else:
            state[k] = v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(path), metadata={"carcheck_head": json.dumps(info.__dict__)})
    return path


def load_head(path: str | Path, backbone: EfficientNetLiteBackbone | None = None, fuse: bool = True
              ) -> tuple[ImageHead | StandaloneNet, HeadInfo]:
    """Load an :class:`ImageHead` (or a :class:`StandaloneNet`, when the file has its own
    backbone) written by :func:`save_head`; eval mode, float32.

    With ``fuse`` a StandaloneNet's BatchNorm layers are folded into its convolutions
    (:func:`~carcheck.models.backbone.fuse_conv_bn`: same outputs, ~10% faster on the CPU);
    pass ``fuse=False`` to train it further or save it again.

    Args:
        backbone: the shared backbone; only its structure is used, to build a branch (default:
            an untrained Lite of the file's variant; the branch's weights come from the file).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a carcheck head file, or its weights do not fit the described head.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: head weights not found")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "carcheck_head" not in meta:
        raise ValueError(f"{path}: not a carcheck head file (no 'carcheck_head' metadata)")
    info = HeadInfo(**json.loads(meta["carcheck_head"]))
    state = _dequantize(load_file(str(path)))
    if info.extra.get("standalone"):
        net = StandaloneNet(EfficientNetLiteBackbone(info.backbone, pretrained=False),
                            len(info.classes) if info.kind == "classifier" else 0,
                            tuple(info.extra["input_size"]), bool(info.extra.get("flip_tta", True)))
        state = {k: v for k, v in state.items() if not k.startswith("backbone.net._fc.")}
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path}: weights do not fit a standalone {info.kind}: {e}") from None
        net.backbone.to(memory_format=torch.channels_last)
        if fuse:
            from .backbone import fuse_conv_bn

            fuse_conv_bn(net.eval().backbone)
        return net.eval(), info
    first = "head.embed.1.weight" if info.kind == "embedding" else "head.net.1.weight"
    if first not in state:
        raise ValueError(f"{path}: no {first!r} tensor: not a {info.kind} head")
    in_features = state[first].shape[1]
    if info.kind == "embedding":
        head: nn.Module = EmbeddingHead(in_features, info.dim, info.hidden)
    else:
        head = ClassifierHead(in_features, len(info.classes), info.hidden)
    branch = None
    if info.extra.get("branch"):
        branch = LastStageBranch(backbone or EfficientNetLiteBackbone(info.backbone, pretrained=False))
    model = ImageHead(head, branch)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit a {info.kind} head: {e}") from None
    return model.eval(), info


class BackboneClassifier(nn.Module):
    """Image -> logits in one module (backbone pooled features + a :class:`ClassifierHead`).

    Used where gradients must reach the feature maps (Grad-CAM): the head alone cannot explain a
    decision spatially. ``target_layer`` is the last convolution before pooling (the branch's,
    when the head has one).

    Input ``(B, 3, H, W)`` float in [0, 1] -> logits ``(B, C)`` float32.
    """

    def __init__(self, backbone: EfficientNetLiteBackbone, head: ImageHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    @property
    def target_layer(self) -> nn.Module:
        if self.head.branch is not None:
            return self.head.branch.conv_head
        return self.backbone.net._conv_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x, with_pooled=self.head.branch is None))
