"""Vehicle presence gate (Ma et al., section II-A, module 1).

Until a trained presence head ships, the score is the summed ImageNet-1k probability of the
vehicle classes (:data:`~carcheck.models.backbone.VEHICLE_IMAGENET_CLASSES`: cars, vans,
trucks, buses and close-up car parts such as grille, car wheel, car mirror), read from the
same backbone pass that feeds segmentation. The default threshold was chosen with
``bench/gate_threshold.py`` on vehicle_presence/coco128 plus car photos (see its JSON).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..models.backbone import vehicle_class_indices

__all__ = ["DEFAULT_VEHICLE_THRESHOLD", "vehicle_score"]

#: Chosen by bench/gate_threshold.py (balanced accuracy on coco128 + car photos at 512 px).
DEFAULT_VEHICLE_THRESHOLD = 0.035


@lru_cache(maxsize=1)
def _indices() -> torch.Tensor:
    return torch.tensor(vehicle_class_indices())


def vehicle_score(imagenet_logits: torch.Tensor) -> torch.Tensor:
    """Summed softmax probability of the vehicle classes.

    Args:
        imagenet_logits: ``(B, 1000)`` float logits.
    Returns:
        ``(B,)`` float32 scores in [0, 1].
    """
    return imagenet_logits.float().softmax(1)[:, _indices()].sum(1)
