"""P(part damaged): a calibrated probability per physical part, and the rule that decides review on it
(issue 26, item 4).

The end-to-end paper's numbers stay as it defines them (Ma et al., IEEE T-ITS 2023, II-D-4):
C_base (the segmenter's confidence in a region), K_agree (views showing the damage / views showing the
part) and C_refined = C_base · K_agree; the report keeps all three. They are not probabilities: on real
cases a crushed rear seen from seven angles has K_agree 2/7 because the part map calls the rear
"visible" in front views, and a C_base of 0.8 on a reflection is as common as on a dent. What goes
to a person is decided on

    P(part damaged) = sigmoid(b + sum_i w_i (x_i - mu_i) / s_i)

a logistic regression (Platt-style calibration over several inputs; Platt 1999, Niculescu-Mizil &
Caruana, ICML 2005) of what the pipeline knows about the part, :data:`FEATURES`:

- ``c_base``: the highest C_base of the part's plausible regions;
- ``k_agree``: K_agree over views;
- ``log_views_damaged``: log(1 + views showing damage on the part);
- ``sqrt_area``: sqrt of the largest share of the part covered by damage in one photo;
- ``p_filter``: the highest damage-filter P(damaged) (the image-level head) over the photos showing
  the damage (0.5 where the head is not installed);
- ``exterior_certain``: share of those photos whose photo type is a certain exterior view (an
  uncertain type is often an interior searched anyway).

The coefficients, the standardisation and the review threshold come from a JSON file fitted by
``python bench/calibration/part_confidence.py`` on the development cases with cross-validation over
cases (never on the held-out cases); the threshold is the lowest P whose confident parts reach the
stated precision on those cases. The shipped file is :data:`DEFAULT_PATH`; the report states which file
decided (its SHA-256 is among the model files) and names P and C_refined separately.

A pure module: numbers in, numbers out; :func:`load_part_confidence` is its only I/O.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .photo_type import EXTERIOR_TYPES

__all__ = ["FEATURES", "DEFAULT_PATH", "PartConfidence", "PhotoEvidence", "part_features", "load_part_confidence",
           "photo_evidence"]

FEATURES = ("c_base", "k_agree", "log_views_damaged", "sqrt_area", "p_filter", "exterior_certain")
DEFAULT_PATH = Path(__file__).with_name("part_confidence.json")


@dataclass(frozen=True)
class PhotoEvidence:
    """What a photo adds to its parts' confidence: the damage filter's P(damaged) (None: no head), whether
    its type is a certain exterior view, and the severity head's grade and its probability (None: not run)."""

    p_damaged: float | None = None
    exterior_certain: bool = True
    severity: str | None = None
    severity_probability: float | None = None


def photo_evidence(photo) -> PhotoEvidence:
    """A photo's :class:`PhotoEvidence` from its assessed :class:`~carcheck.schema.PhotoReport`: the damage
    filter's P(damaged), whether its type is a certain exterior view (no photo-type head: assumed), and the
    severity head's grade."""
    pt = photo.photo_type
    sev = (photo.car_state or {}).get("severity")
    return PhotoEvidence(
        p_damaged=None if photo.damage_filter is None else float(photo.damage_filter.probability_damaged),
        exterior_certain=pt is None or (pt.type in EXTERIOR_TYPES and not pt.uncertain),
        severity=None if sev is None else sev.label,
        severity_probability=None if sev is None or sev.probability is None else float(sev.probability))


def part_features(c_base: float, k_agree: float, views_damaged: int, max_area_fraction: float,
                  evidence: Sequence[PhotoEvidence]) -> dict[str, float]:
    """The inputs of P(part damaged) (:data:`FEATURES`, module doc) for one part.

    Args:
        c_base: highest C_base of the part's plausible regions, in [0, 1].
        k_agree: views showing damage / views showing the part, in [0, 1].
        views_damaged: views showing damage on the part (>= 1 for a part with a finding).
        max_area_fraction: largest fraction of the part covered by damage in one photo, in [0, 1]
            (sums of several regions may exceed 1: clipped).
        evidence: one entry per photo showing the damage.
    Returns:
        ``{feature: value}`` in :data:`FEATURES` order.
    """
    ps = [e.p_damaged for e in evidence if e.p_damaged is not None]
    return {
        "c_base": float(c_base),
        "k_agree": float(k_agree),
        "log_views_damaged": math.log1p(max(0, int(views_damaged))),
        "sqrt_area": math.sqrt(min(1.0, max(0.0, float(max_area_fraction)))),
        "p_filter": float(max(ps)) if ps else 0.5,
        "exterior_certain": (sum(e.exterior_certain for e in evidence) / len(evidence)) if evidence else 0.0,
    }


@dataclass(frozen=True)
class PartConfidence:
    """A fitted logistic model of P(part damaged) and its review threshold (module doc).

    Attributes:
        features: input names, a subset of :data:`FEATURES` in the order of ``coef``.
        mean, scale: standardisation of each input (scale > 0).
        coef, intercept: logistic regression weights on the standardised inputs.
        threshold: a part whose P is below this needs review.
        target_precision: the precision the threshold was chosen for on the fitting cases.
        source: how and on what it was fitted (cases, folds, date, commit), for the report and README.
        metrics: the cross-validated numbers the fit reached (ECE, precision, recall), as measured.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float
    target_precision: float
    source: str = ""
    metrics: Mapping[str, float | int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.mean) == len(self.scale) == len(self.coef) == n):
            raise ValueError(f"part confidence: {n} features but {len(self.mean)} means, {len(self.scale)} scales, "
                             f"{len(self.coef)} coefficients")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"part confidence: unknown features {unknown}; known: {FEATURES}")
        if any(s <= 0 for s in self.scale):
            raise ValueError("part confidence: every scale must be > 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"part confidence: threshold {self.threshold} outside [0, 1]")

    def probability(self, features: Mapping[str, float]) -> float:
        """P(part damaged) in (0, 1) for one part's :func:`part_features`.

        Raises:
            KeyError: an input of the model is missing from ``features``.
        """
        z = self.intercept + sum(w * (features[f] - m) / s
                                 for f, w, m, s in zip(self.features, self.coef, self.mean, self.scale))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_json(self) -> str:
        """The model as the JSON :func:`load_part_confidence` reads."""
        return json.dumps(asdict(self), indent=1) + "\n"


def load_part_confidence(path: str | Path = DEFAULT_PATH) -> PartConfidence:
    """Read a fitted model.

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON or not a valid model (names the file).
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return PartConfidence(features=tuple(d["features"]), mean=tuple(d["mean"]), scale=tuple(d["scale"]),
                              coef=tuple(d["coef"]), intercept=float(d["intercept"]), threshold=float(d["threshold"]),
                              target_precision=float(d["target_precision"]), source=str(d.get("source", "")),
                              metrics=dict(d.get("metrics") or {}))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a part-confidence model ({e})") from None
