"""Which car a case shows: make/model voting over its photos and the same-vehicle check.

- make/model vote: the make/model head's softmax averaged over the case's assessed photos that
  the OOD rule keeps in scope (all assessed photos when none is); top-3 models, and top-3 makes
  (a make's probability is the sum over its models). The case is in scope when more than half of
  its assessed photos are.
- same vehicle, with a calibration (:data:`~.same_vehicle.DEFAULT_CALIBRATION`):
  :func:`evidence_same_vehicle_check`, one decision per exterior photo from the re-id embedding,
  make/model agreement and body colour (:mod:`.same_vehicle`); other photo types are not compared.
  Without one: :func:`~.consistency.case_consistency` (the verification model's pair distance to
  the case's medoid photo, every vehicle photo). A flagged photo is "different vehicle?"
  (:mod:`.review` words the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..data.taxonomy import make_of
from ..schema import ClassScore, Consistency, VehicleIdentity, VehicleMatch
from .consistency import case_consistency
from .same_vehicle import PhotoIdentity, SameVehicleModel

__all__ = ["make_model_vote", "SameVehicle", "same_vehicle_check", "evidence_same_vehicle_check"]


def make_model_vote(logits: torch.Tensor, classes: Sequence[str], in_scope: Sequence[bool]) -> VehicleIdentity:
    """The case's make/model from its photos' make/model head outputs.

    Args:
        logits: ``(N, C)`` float, one row per assessed photo (N >= 1).
        classes: the head's C class names (``Make_Model_Year``; the make is the first token).
        in_scope: per photo, whether the OOD rule keeps it in scope.
    Returns:
        :class:`~carcheck.schema.VehicleIdentity` (probabilities rounded to 4 decimals).
    Raises:
        ValueError: no photo, or ``in_scope`` / ``classes`` not matching ``logits``' shape.
    """
    if logits.ndim != 2 or logits.shape[0] == 0 or len(in_scope) != logits.shape[0] or len(classes) != logits.shape[1]:
        raise ValueError(f"make_model_vote: logits {tuple(logits.shape)}, {len(in_scope)} in-scope flags, "
                         f"{len(classes)} classes do not match")
    keep = [i for i, s in enumerate(in_scope) if s]
    use = keep or list(range(logits.shape[0]))
    prob = torch.stack([logits[i].softmax(0) for i in use]).mean(0)
    top = prob.topk(min(3, len(prob)))
    makes: dict[str, float] = {}
    for c, v in zip(classes, prob.tolist()):
        makes[make_of(c)] = makes.get(make_of(c), 0.0) + v
    return VehicleIdentity(
        make_model_top3=[ClassScore(label=classes[int(i)], probability=round(float(v), 4))
                         for v, i in zip(top.values, top.indices)],
        make_top3=[ClassScore(label=k, probability=round(v, 4)) for k, v in sorted(makes.items(), key=lambda kv: -kv[1])[:3]],
        in_scope=len(keep) * 2 > logits.shape[0], known_models=len(classes))


@dataclass
class SameVehicle:
    """Result of :func:`same_vehicle_check`.

    Attributes:
        consistency: the report's case-level section.
        matches: photo name -> its match against the reference photo (absent with < 2 photos).
    """

    consistency: Consistency
    matches: dict[str, VehicleMatch] = field(default_factory=dict)


def same_vehicle_check(names: Sequence[str], embeddings: torch.Tensor,
                       distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], threshold: float) -> SameVehicle:
    """Do all vehicle photos of a case show the same car?

    Args:
        names: the assessed photos' names, in the order of ``embeddings``.
        embeddings: ``(N, dim)`` float32 embeddings of those photos.
        distance: the verification model's pair distance (``(B, dim), (B, dim) -> (B,)``).
        threshold: distance above which two photos are different vehicles (EER on validation pairs).
    """
    res = case_consistency(distance, embeddings, float(threshold))
    ref = names[res.reference] if res.reference is not None else None
    out = SameVehicle(Consistency(checked_photos=len(names), threshold=float(threshold), reference=ref, note=res.note))
    for name, d, same in zip(names, res.distances, res.same):
        if ref is not None:
            out.matches[name] = VehicleMatch(distance=round(d, 4), same_vehicle=same, reference=ref)
        if not same:
            out.consistency.different_vehicle.append(name)
    return out


def evidence_same_vehicle_check(photos: dict[str, PhotoIdentity], model: SameVehicleModel,
                                distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> SameVehicle:
    """Same vehicle from several kinds of evidence (:mod:`.same_vehicle`), exterior photos only.

    Each exterior photo's score is its median P(same car) against the case's other exterior photos
    (:meth:`~.same_vehicle.SameVehicleModel.photo_scores`); below ``model.threshold`` it is flagged.
    The reference is the photo with the highest score; ``VehicleMatch.distance`` is ``1 - score`` and
    ``Consistency.threshold`` ``1 - model.threshold`` (a photo is flagged when its distance is above it).
    Photos not typed exterior get no match: they are never a different vehicle by appearance.

    Args:
        photos: photo name -> its :class:`~.same_vehicle.PhotoIdentity` (every assessed photo).
        model: the fitted calibration.
        distance: the verification model's pair distance (``(B, dim), (B, dim) -> (B,)``).
    """
    scores = model.photo_scores(photos, distance)
    n_ext = sum(v.exterior for v in photos.values())
    skipped = len(photos) - n_ext
    if not scores:
        return SameVehicle(Consistency(checked_photos=n_ext, threshold=round(1 - model.threshold, 4), reference=None,
                                       note=f"fewer than 2 exterior photos: nothing to compare ({skipped} other "
                                            "photos are not compared by appearance)"))
    ref = max(scores, key=lambda k: scores[k])
    out = SameVehicle(Consistency(checked_photos=len(scores), threshold=round(1 - model.threshold, 4), reference=ref, note=""))
    for name, sc in scores.items():
        same = sc >= model.threshold
        out.matches[name] = VehicleMatch(distance=round(1 - sc, 4), same_vehicle=same, reference=ref)
        if not same:
            out.consistency.different_vehicle.append(name)
    k = len(scores) - len(out.consistency.different_vehicle)
    out.consistency.note = (f"{k} of {len(scores)} exterior photos agree on one car (re-id, make/model, body colour; "
                            f"P(same) >= {model.threshold:.2f})"
                            + (f"; {skipped} interior / document / no-vehicle photos not compared" if skipped else ""))
    return out
