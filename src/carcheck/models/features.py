"""Pooled backbone features of whole photos, as the image-level heads see them, with a disk cache.

The backbone is frozen, so an image-level head (classifier, embedding) trained on cached pooled
features is exactly the head that runs at inference on the shared backbone pass: same input
(longer side resized to 512 px), same bf16 path, same 1280-d pooled vector. Training such a head
then costs milliseconds per epoch instead of a backbone pass per image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..data.images import ImageLoadError, load_image
from .backbone import EfficientNetLiteBackbone, build_backbone, inference_context
from .inference import to_input_tensor

__all__ = ["VIEWS", "CROP_VIEWS", "pooled_features", "FeatureCache"]

#: Views cached per photo by default: the photo and its mirror image (train-time augmentation).
VIEWS = ("full", "hflip")
#: Crop views (train-time augmentation for classes a crop cannot change, e.g. "undamaged"):
#: central 60% of each side, left and right 65% of the width.
CROP_VIEWS = ("center", "left", "right")


def pooled_features(backbone: EfficientNetLiteBackbone, image: np.ndarray, longest: int = 512, bf16: bool = True,
                    views: Sequence[str] = ("full",)) -> torch.Tensor:
    """Pooled head features of one photo for each view.

    Args:
        image: RGB ``uint8`` ``(H, W, 3)``.
        longest: longer side in px fed to the backbone (the assessment's 512).
        views: names from :data:`VIEWS` and :data:`CROP_VIEWS`.
    Returns:
        ``(len(views), D)`` float32 (D = 1280 for Lite0), a normal (not inference-mode) tensor.
    Raises:
        ValueError: unknown view.
    """
    h, w = image.shape[:2]
    crops = {"center": (0.2, 0.8, 0.2, 0.8), "left": (0.0, 1.0, 0.0, 0.65), "right": (0.0, 1.0, 0.35, 1.0)}
    out = []
    for v in views:
        if v in ("full", "hflip"):
            x = to_input_tensor(image, longest)
            x = x.flip(-1) if v == "hflip" else x
        elif v in crops:
            y0, y1, x0, x1 = crops[v]
            x = to_input_tensor(image[int(y0 * h):max(int(y1 * h), int(y0 * h) + 1),
                                      int(x0 * w):max(int(x1 * w), int(x0 * w) + 1)], longest)
        else:
            raise ValueError(f"unknown view {v!r}; choose from {VIEWS + CROP_VIEWS}")
        with inference_context(bf16):
            out.append(backbone(x, with_pooled=True).pooled.float())
    return torch.cat(out)  # outside inference mode: a normal tensor, usable in autograd


class FeatureCache:
    """Pooled features of image files, cached on disk (one ``.npy`` per file and setting).

    The key hashes the resolved path, file size, modification time, backbone variant, input
    size and views, so an edited photo or another setting is recomputed.

    Args:
        cache_dir: folder for the ``.npy`` files (created).
        backbone: a frozen backbone (default: ImageNet Lite0, eval, channels_last).
        longest / bf16 / views: as :func:`pooled_features`.
    """

    def __init__(self, cache_dir: str | Path, backbone: EfficientNetLiteBackbone | None = None, longest: int = 512,
                 bf16: bool = True, views: Sequence[str] = VIEWS) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._backbone = backbone
        self.longest, self.bf16, self.views = longest, bf16, tuple(views)

    @property
    def backbone(self) -> EfficientNetLiteBackbone:
        if self._backbone is None:
            self._backbone = build_backbone("lite0")
        return self._backbone

    def _key(self, path: Path) -> Path:
        st = path.stat()
        variant = self._backbone.variant if self._backbone is not None else "lite0"
        h = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{variant}|{self.longest}|"
                         f"{int(self.bf16)}|{','.join(self.views)}".encode()).hexdigest()
        return self.dir / f"{h}.npy"

    def get(self, path: str | Path) -> torch.Tensor:
        """``(V, D)`` float32 features of one file.

        Raises:
            ImageLoadError: the file is missing or not a readable image (names the file).
        """
        path = Path(path)
        if not path.is_file():
            raise ImageLoadError(path, "file not found")
        key = self._key(path)
        if key.is_file():
            return torch.from_numpy(np.load(key).astype(np.float32))
        feats = pooled_features(self.backbone, load_image(path), self.longest, self.bf16, self.views)
        tmp = key.with_suffix(".tmp.npy")
        np.save(tmp, feats.numpy().astype(np.float16))
        tmp.replace(key)
        return feats.half().float()  # the same values a cache hit returns

    def get_many(self, paths: Iterable[str | Path], track: Callable = lambda it, **k: it
                 ) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
        """Features of many files; unreadable files are skipped and reported, never raised.

        Returns:
            ``(features (N_ok, V, D) float32, indices of the readable inputs, [(file, reason)] of the rest)``.
        """
        feats, ok, bad = [], [], []
        for i, p in enumerate(track(list(paths), description="features")):
            try:
                feats.append(self.get(p))
                ok.append(i)
            except ImageLoadError as e:
                bad.append((str(p), e.reason))
        if not feats:
            return torch.zeros(0, len(self.views), 0), ok, bad
        return torch.stack(feats), ok, bad
