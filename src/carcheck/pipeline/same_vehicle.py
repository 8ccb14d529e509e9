"""Same vehicle from several kinds of evidence: one decision per exterior photo of a case.

The shipped re-id model was calibrated on surveillance crops; on phone photos its distance alone
separates cars poorly (bench/accuracy/same_car_phone.py). This module combines what the assessment
already has for every photo, without another pass:

- ``d_embedding``: the verification model's pair distance of the two re-id embeddings;
- ``bc_model`` / ``bc_make``: the Bhattacharyya coefficient ``sum_k sqrt(p_k q_k)`` of the two photos'
  make/model (and make) probabilities: 1 when both photos give the same belief;
- ``d_lightness`` / ``d_chroma``: ``|dL*|`` and the a*b* distance of the two body colours (median
  CIE L*a*b* of the pixels the part map calls body panels: no glass, lamps or wheels);
- ``closeup``: how many of the two photos are close-ups (0, 1, 2).

A logistic regression over those features (fitted on listing pairs of real cases by
``bench/calibration/same_vehicle.py``, stored as JSON) gives P(same car) per pair; a photo's score is
its median P(same) against the case's other exterior photos, and a score below the calibrated
threshold flags it "different vehicle?". Only exterior photos (full views and close-ups) are compared:
interior, odometer, VIN and document photos are never a different vehicle by appearance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..data.taxonomy import make_of
from .photo_type import EXTERIOR_TYPES

__all__ = ["FEATURES", "PhotoIdentity", "SameVehicleModel", "body_colour_lab", "pair_features", "photo_identity",
           "DEFAULT_CALIBRATION"]

#: Pair features, in the order of the model's coefficients.
FEATURES = ("d_embedding", "bc_model", "bc_make", "d_lightness", "d_chroma", "closeup")
#: The calibration the assessment uses when it exists (written by bench/calibration/same_vehicle.py --write).
DEFAULT_CALIBRATION = Path(__file__).with_name("same_vehicle.json")
#: Part-map classes that are not body paint.
_NOT_BODY = ("glass", "light", "wheel")
#: Fewest body pixels (fraction of the photo) for a colour.
MIN_BODY_FRACTION = 0.02


@dataclass
class PhotoIdentity:
    """The identity evidence of one photo.

    Attributes:
        exterior: typed exterior (full view or close-up): compared at all.
        closeup: typed exterior close-up.
        embedding: ``(dim,)`` float32 re-id embedding.
        model_probs: ``(C,)`` float32 make/model probabilities, or None without the head.
        make_probs: ``(M,)`` float32 probabilities summed per make (classes sorted by make), or None.
        lab: ``(3,)`` float32 median L*a*b* of the body pixels (L* 0-100), or None with too few.
        shipped_flag: the report's own same-vehicle flag of this photo (for comparison in benchmarks).
    """

    exterior: bool
    closeup: bool
    embedding: torch.Tensor
    model_probs: np.ndarray | None = None
    make_probs: np.ndarray | None = None
    lab: np.ndarray | None = None
    shipped_flag: bool = False


def body_colour_lab(image: np.ndarray, part_label: np.ndarray, part_names: Sequence[str]) -> np.ndarray | None:
    """Median CIE L*a*b* of the body-panel pixels of a photo.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        part_label: ``(H, W)`` int part map at the same size, 0 background, ``i`` = ``part_names[i - 1]``.
        part_names: the part classes.
    Returns:
        ``(3,)`` float32 (L* in 0-100, a*, b* in about -128..127), or None when the body covers less
        than :data:`MIN_BODY_FRACTION` of the photo.
    """
    import cv2

    body = [i + 1 for i, n in enumerate(part_names) if not any(s in n for s in _NOT_BODY)]
    mask = np.isin(part_label, body)
    if mask.mean() < MIN_BODY_FRACTION:
        return None
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)[mask].astype(np.float32)
    med = np.median(lab, axis=0)
    return np.array([med[0] * 100 / 255, med[1] - 128, med[2] - 128], dtype=np.float32)


def photo_identity(report, image: np.ndarray, part_label: np.ndarray, part_names: Sequence[str],
                   embedding: torch.Tensor, make_model_logits: torch.Tensor | None,
                   classes: Sequence[str] | None) -> PhotoIdentity:
    """The :class:`PhotoIdentity` of an assessed photo from its report (photo type, vehicle match) and
    its network-resolution image, part map, embedding ``(dim,)`` and make/model logits ``(C,)``."""
    ptype = report.photo_type.type if report.photo_type is not None else None
    model = make = None
    if make_model_logits is not None and classes:
        model = make_model_logits.float().softmax(0).numpy()
        makes = sorted({make_of(c) for c in classes})
        make = np.zeros(len(makes), np.float32)
        np.add.at(make, [makes.index(make_of(c)) for c in classes], model)
    return PhotoIdentity(exterior=ptype is None or ptype in EXTERIOR_TYPES, closeup=ptype == "exterior_closeup",
                         embedding=embedding.float(), model_probs=model, make_probs=make,
                         lab=body_colour_lab(image, part_label, part_names),
                         shipped_flag=bool(report.vehicle_match is not None and not report.vehicle_match.same_vehicle))


def _bc(p: np.ndarray | None, q: np.ndarray | None) -> float:
    return float(np.sqrt(np.clip(p, 0, None) * np.clip(q, 0, None)).sum()) if p is not None and q is not None else np.nan


def pair_features(a: PhotoIdentity, b: PhotoIdentity,
                  distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[float]:
    """The :data:`FEATURES` of a pair of photos (NaN where a photo lacks the evidence)."""
    with torch.no_grad():
        d = float(distance(a.embedding[None], b.embedding[None])[0])
    if a.lab is not None and b.lab is not None:
        dl, dc = abs(float(a.lab[0] - b.lab[0])), float(np.hypot(*(a.lab[1:] - b.lab[1:])))
    else:
        dl = dc = np.nan
    return [d, _bc(a.model_probs, b.model_probs), _bc(a.make_probs, b.make_probs), dl, dc,
            float(a.closeup) + float(b.closeup)]


@dataclass
class SameVehicleModel:
    """Logistic P(same car) over standardised :data:`FEATURES` and the per-photo threshold.

    Attributes:
        mean / scale / fill: per feature, the standardisation and the value a missing feature takes
            (the training mean).
        coef / intercept: the logistic regression's weights (on standardised features).
        threshold: a photo whose median P(same) against the others is below it is flagged.
        source: how it was fitted (data, command, date).
    """

    mean: list[float]
    scale: list[float]
    fill: list[float]
    coef: list[float]
    intercept: float
    threshold: float = 0.5
    source: dict = field(default_factory=dict)

    def p_same(self, x: np.ndarray) -> np.ndarray:
        """P(same car) of pair features ``(N, len(FEATURES))`` -> ``(N,)`` float64."""
        x = np.array(x, dtype=np.float64, ndmin=2)
        x = np.where(np.isnan(x), np.asarray(self.fill), x)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1 / (1 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    def photo_scores(self, photos: Mapping[str, PhotoIdentity],
                     distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Per exterior photo, its median P(same) against the other exterior photos (none with < 2)."""
        names = [k for k, v in photos.items() if v.exterior]
        if len(names) < 2:
            return {}
        p = np.ones((len(names), len(names)))
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                p[i, j] = p[j, i] = self.p_same(pair_features(photos[names[i]], photos[names[j]], distance))[0]
        return {n: float(np.median(np.delete(p[i], i))) for i, n in enumerate(names)}

    def fits(self, head_sha256: Mapping[str, str]) -> bool:
        """Whether the heads it was fitted on (``source["heads"]``: task -> SHA-256) are the ones loaded
        (``head_sha256``: task -> SHA-256); a calibration without that record fits any heads."""
        fitted = self.source.get("heads", {})
        return all(head_sha256.get(t) == h for t, h in fitted.items())

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "mean": self.mean, "scale": self.scale, "fill": self.fill,
                "coef": self.coef, "intercept": self.intercept, "threshold": self.threshold, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "SameVehicleModel":
        """Raises ValueError when the stored features differ from :data:`FEATURES`."""
        if tuple(d.get("features", ())) != FEATURES:
            raise ValueError(f"same-vehicle calibration has features {d.get('features')}, expected {list(FEATURES)}")
        return cls(d["mean"], d["scale"], d["fill"], d["coef"], float(d["intercept"]), float(d["threshold"]),
                   d.get("source", {}))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_CALIBRATION) -> "SameVehicleModel | None":
        """The stored calibration, or None when the file does not exist."""
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None
