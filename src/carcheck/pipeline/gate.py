"""Vehicle presence gate (Ma et al., section II-A, module 1).

The assessment gates with the trained presence head (``classifier_presence_lite0``) when it is
installed; this module is the fallback rule without it: the summed ImageNet-1k probability of the
vehicle classes (:data:`~carcheck.models.backbone.VEHICLE_IMAGENET_CLASSES`: cars, vans,
trucks, buses and close-up car parts such as grille, car wheel, car mirror), read from the
same backbone pass that feeds segmentation. The default threshold was chosen with
``bench/calibration/gate_threshold.py`` on vehicle_presence/coco128 plus car photos (see its JSON).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..models.backbone import vehicle_class_indices
from ..schema import AssessConfig

__all__ = ["DEFAULT_VEHICLE_THRESHOLD", "DEFAULT_PART_COVERAGE_THRESHOLD", "vehicle_score", "part_coverage",
           "passes_gate"]

#: Chosen by bench/calibration/gate_threshold.py (balanced accuracy on coco128 + car photos at 512 px); the
#: default of :class:`~carcheck.schema.AssessConfig` (its one source).
DEFAULT_VEHICLE_THRESHOLD: float = AssessConfig.model_fields["vehicle_threshold"].default
#: Second, OR-ed rule: fraction of the photo the part head labels as a car part. ImageNet
#: classes miss close-ups of a damaged panel; the part head sees them. Chosen by the same bench.
DEFAULT_PART_COVERAGE_THRESHOLD: float = AssessConfig.model_fields["part_coverage_threshold"].default


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


def part_coverage(part_label) -> float:
    """Fraction of pixels the part head assigns to any part (label > 0) of a ``(H, W)`` label map."""
    return float((part_label > 0).mean())


def passes_gate(score: float, coverage: float, vehicle_threshold: float = DEFAULT_VEHICLE_THRESHOLD,
                coverage_threshold: float = DEFAULT_PART_COVERAGE_THRESHOLD) -> bool:
    """A photo shows a vehicle when the ImageNet vehicle score or the part coverage reaches its threshold."""
    return score >= vehicle_threshold or coverage >= coverage_threshold
