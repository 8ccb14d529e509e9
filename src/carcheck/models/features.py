"""Pooled backbone features of whole photos, as the image-level heads see them, with a disk cache.

The backbone is frozen, so an image-level head (classifier, embedding) trained on cached pooled
features is exactly the head that runs at inference on the shared backbone pass: same input
(longer side resized to 512 px), same precision (resolved from ``auto`` by the hardware, and part
of the cache key), same 1280-d pooled vector. Training such a head
then costs milliseconds per epoch instead of a backbone pass per image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import ImageLoadError, load_image
from .backbone import EfficientNetLiteBackbone, build_backbone, inference_context
from .inference import to_input_tensor
from .runtime import resolve_precision

__all__ = ["VIEWS", "ALL_VIEWS", "pooled_features", "FeatureCache"]

#: Default views of a photo: the photo and its mirror image (the mirror is train-time augmentation).
VIEWS = ("full", "hflip")
#: Every view :func:`pooled_features` can make. ``lowres``: the network input downscaled 2x
#: (antialiased) and upscaled back, i.e. the photo as a 256 px one looks at 512 px; an opt-in
#: training view so that a head does not take "small, soft photo" as a class cue (the damage
#: filter's undamaged training photos are all >= 512 px while most VDS damage photos are ~259 px);
#: ``lowres_hflip``: the same of the mirror image; ``vlowres``: downscaled 3x (a 170 px photo).
ALL_VIEWS = ("full", "hflip", "lowres", "lowres_hflip", "vlowres")


def pooled_features(backbone: EfficientNetLiteBackbone, image: np.ndarray, longest: int = 512, bf16: bool | None = None,
                    views: Sequence[str] = ("full",)) -> torch.Tensor:
    """Pooled head features of one photo for each view, in one batched backbone pass.

    Args:
        image: RGB ``uint8`` ``(H, W, 3)``.
        longest: longer side in px fed to the backbone (the assessment's 512).
        bf16: bf16 autocast; None: as the hardware runs fastest (precision ``auto``).
        views: names from :data:`ALL_VIEWS`.
    Returns:
        ``(len(views), D)`` float32 (D = 1280 for Lite0), a normal (not inference-mode) tensor.
    Raises:
        ValueError: unknown view.
    """
    unknown = [v for v in views if v not in ALL_VIEWS]
    if unknown:
        raise ValueError(f"unknown view(s) {unknown}; choose from {ALL_VIEWS}")
    x = to_input_tensor(image, longest)

    def view(name: str) -> torch.Tensor:
        y = x.flip(-1) if name in ("hflip", "lowres_hflip") else x
        if name in ("lowres", "lowres_hflip", "vlowres"):
            small = F.interpolate(y, scale_factor=1 / 3 if name == "vlowres" else 0.5, mode="bilinear", antialias=True,
                                  align_corners=False)
            return F.interpolate(small, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return y

    batch = torch.cat([view(v) for v in views]).contiguous(memory_format=torch.channels_last)
    with inference_context(bf16):
        pooled = backbone(batch, with_pooled=True).pooled
    return pooled.float().clone()  # outside inference mode: a normal tensor, usable in autograd


class FeatureCache:
    """Pooled features of image files, cached on disk (one ``.npy`` per file, view and setting).

    The key hashes the resolved path, file size, modification time, backbone variant, input
    size, the resolved precision (fp32 / bf16) and the view, so an edited photo or another setting is recomputed, and asking for
    one view (evaluation) never computes another (the mirror image only training needs).

    Args:
        cache_dir: folder for the ``.npy`` files (created).
        backbone: a frozen backbone (default: ImageNet Lite0, eval, channels_last, built on first miss).
        longest: as :func:`pooled_features`.
        precision: ``auto`` | ``fp32`` | ``bf16`` (:func:`~carcheck.models.runtime.resolve_precision`).
        views: the views :meth:`get` returns by default.
    """

    def __init__(self, cache_dir: str | Path, backbone: EfficientNetLiteBackbone | None = None, longest: int = 512,
                 precision: str = "auto", views: Sequence[str] = VIEWS) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._backbone = backbone
        self.precision = resolve_precision(precision)
        self.longest, self.bf16, self.views = longest, self.precision == "bf16", tuple(views)

    @property
    def backbone(self) -> EfficientNetLiteBackbone:
        if self._backbone is None:
            self._backbone = build_backbone("lite0")
        return self._backbone

    def _key(self, path: Path, view: str) -> Path:
        st = path.stat()
        variant = self._backbone.variant if self._backbone is not None else "lite0"
        h = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{variant}|{self.longest}|"
                         f"{int(self.bf16)}|{view}".encode()).hexdigest()
        return self.dir / f"{h}.npy"

    def get(self, path: str | Path, views: Sequence[str] | None = None) -> torch.Tensor:
        """``(V, D)`` float32 features of one file (``views`` default: the cache's).

        Raises:
            ImageLoadError: the file is missing or not a readable image (names the file).
        """
        path = Path(path)
        if not path.is_file():
            raise ImageLoadError(path, "file not found")
        views = tuple(views or self.views)
        keys = {v: self._key(path, v) for v in views}
        missing = [v for v in views if not keys[v].is_file()]
        if missing:
            feats = pooled_features(self.backbone, load_image(path), self.longest, self.bf16, missing)
            for v, f in zip(missing, feats):
                tmp = keys[v].with_suffix(".tmp.npy")
                np.save(tmp, f.numpy().astype(np.float16))
                tmp.replace(keys[v])
        # every value as stored (float16), whether just computed or read back
        return torch.stack([torch.from_numpy(np.load(keys[v]).astype(np.float32)) for v in views])

    def get_many(self, paths: Iterable[str | Path], views: Sequence[str] | None = None,
                 track: Callable = lambda it, **k: it) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
        """Features of many files; unreadable files are skipped and reported, never raised.

        Returns:
            ``(features (N_ok, V, D) float32, indices of the readable inputs, [(file, reason)] of the rest)``.
        """
        feats, ok, bad = [], [], []
        for i, p in enumerate(track(list(paths), description="features")):
            try:
                feats.append(self.get(p, views))
                ok.append(i)
            except ImageLoadError as e:
                bad.append((str(p), e.reason))
        if not feats:
            return torch.zeros(0, len(views or self.views), 0), ok, bad
        return torch.stack(feats), ok, bad
