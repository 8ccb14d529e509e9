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

__all__ = ["ClassifierHead", "EmbeddingHead", "LastStageBranch", "ImageHead", "HeadInfo", "save_head", "load_head",
           "BackboneClassifier", "SHIPPED_CLASSIFIERS"]

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
            photo scoring below the threshold is out of scope (empty: no rule).
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


def save_head(head: ImageHead, info: HeadInfo, path: str | Path) -> Path:
    """Write an :class:`ImageHead`'s weights (float16 to keep files small) and its
    :class:`HeadInfo` as safetensors (``info.extra["branch"]`` records whether it has a branch)."""
    info.extra["branch"] = head.branch is not None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(path), metadata={"carcheck_head": json.dumps(info.__dict__)})
    return path


def load_head(path: str | Path, backbone: EfficientNetLiteBackbone | None = None) -> tuple[ImageHead, HeadInfo]:
    """Load an :class:`ImageHead` written by :func:`save_head`; eval mode, float32.

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
    state = {k: v.float() for k, v in load_file(str(path)).items()}
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
