"""Case consistency: do all vehicle photos of a case show the same car?

Every vehicle photo's embedding is compared with every other through the verification model's
own pair distance (cosine distance of the fine-tuned re-id embeddings, or ``1 - P(same
vehicle)`` of a Siamese L1-distance head). The case's majority vehicle
is represented by its medoid photo (smallest summed distance to the others, i.e. the photo most
others match); a photo farther than the threshold (the EER threshold on validation pairs) from it
is flagged "different vehicle?" with its distance. With two photos there is no majority: a
mismatch flags both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["ConsistencyResult", "case_consistency"]


@dataclass
class ConsistencyResult:
    """Per photo (same order as the input): distance to the reference and whether it matches."""

    reference: int | None
    distances: list[float]
    same: list[bool]
    note: str


@torch.no_grad()
def case_consistency(distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], embeddings: torch.Tensor,
                     threshold: float) -> ConsistencyResult:
    """Majority-vehicle check.

    Args:
        distance: pair distance of two embedding batches ``(B, dim)`` -> ``(B,)`` (the
            verification model's ``distance`` method).
        embeddings: ``(N, dim)`` float32 L2-normalised embeddings of the case's vehicle photos.
        threshold: distance above which two photos are called different vehicles.
    Returns:
        :class:`ConsistencyResult` (no reference when N < 2).
    """
    n = embeddings.shape[0]
    if n < 2:
        return ConsistencyResult(None, [0.0] * n, [True] * n, "fewer than 2 vehicle photos: nothing to compare")
    a = embeddings[:, None, :].expand(n, n, -1).reshape(n * n, -1)
    b = embeddings[None, :, :].expand(n, n, -1).reshape(n * n, -1)
    d = distance(a, b).reshape(n, n)
    d = (d + d.T) / 2
    d.fill_diagonal_(0)
    ref = int(d.sum(1).argmin())
    dist = d[ref].tolist()
    same = [x <= threshold for x in dist]
    if n == 2 and not same[1 - ref]:
        return ConsistencyResult(ref, dist, [False, False], "2 photos that do not match: no majority to compare with")
    k = sum(same)
    note = f"{k} of {n} vehicle photos match the case's majority vehicle"
    if k <= n / 2:
        note += " (no clear majority: check all photos)"
    return ConsistencyResult(ref, dist, same, note)
