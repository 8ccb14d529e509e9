"""What a photo shows, from the photo-type head's probabilities: exterior full view, exterior
close-up, interior, document, VIN plate / odometer / dashboard close-up, or no vehicle. Only
exterior photos are searched for exterior damage; interior photos keep the car-state heads; the
others are listed with their type (issue 16, item 1).

A pure rule module (probabilities in, decision out, no I/O). The head is
``classifier_photo_type_lite0`` (its model card gives the data and the held-out accuracy); its
classes are :data:`PHOTO_TYPES` in that (sorted) order.

Rule: the exterior probability is the sum of both exterior types, so a photo between a full view
and a close-up is not lost to a third type; it is exterior when that sum beats every other single
type (then full view or close-up, whichever is higher). A decision whose winning probability is
below :attr:`PhotoTypeConfig.min_confidence` is ``uncertain``: it keeps the type but is still
searched for exterior damage when the exterior sum reaches :attr:`PhotoTypeConfig.search_if_exterior_at_least`
(missing damage costs more than a review), and a reviewer is told why.

Defaults (min_confidence 0.85, search_if_exterior_at_least 0: every uncertain photo is searched) put the
damage search first: the head was trained without damaged cars (bench/accuracy/photo_type_labels.py), and on
held-out damage close-ups (lensor test, lplenka val) its wrong non-exterior calls have P 0.34-0.81, while
on its own held-out split 94% of non-exterior photos reach P >= 0.9 (bench/accuracy/photo_type.py). So a photo is
left out of the exterior search only when the head is sure; the price is that uncertain interior photos
(two of the real case's three) are still searched and go to review with "photo type uncertain".
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..schema import PHOTO_TYPES, PhotoTypeConfig, PhotoTypeDecision

__all__ = ["EXTERIOR_TYPES", "TYPE_NAMES", "decide_photo_type", "probabilities_from_logits"]

EXTERIOR_TYPES = ("exterior_full", "exterior_closeup")
#: What a report calls each type.
TYPE_NAMES = {"document": "document (registration, licence, paper)", "exterior_closeup": "exterior close-up",
              "exterior_full": "exterior full view", "interior": "interior",
              "no_vehicle": "no vehicle", "vin_dashboard": "VIN plate / odometer / dashboard close-up"}


def probabilities_from_logits(logits: Sequence[float], classes: Sequence[str] = PHOTO_TYPES) -> dict[str, float]:
    """Softmax of the head's logits as ``{type: probability}``.

    Raises:
        ValueError: lengths differ or a class is not a photo type.
    """
    import math

    if len(logits) != len(classes):
        raise ValueError(f"{len(logits)} logits for {len(classes)} classes")
    unknown = [c for c in classes if c not in PHOTO_TYPES]
    if unknown:
        raise ValueError(f"unknown photo types {unknown}; expected {PHOTO_TYPES}")
    m = max(float(v) for v in logits)
    e = [math.exp(float(v) - m) for v in logits]
    s = sum(e)
    return {c: v / s for c, v in zip(classes, e)}


def decide_photo_type(probabilities: Mapping[str, float], config: PhotoTypeConfig | None = None) -> PhotoTypeDecision:
    """Type of one photo from the head's probabilities (see the module doc for the rule).

    Args:
        probabilities: ``{type: probability}`` over :data:`PHOTO_TYPES` (missing types count 0).
        config: thresholds.
    Raises:
        ValueError: an unknown type, a negative or non-finite probability, or a sum not within 1 +- 0.01.
    """
    import math

    cfg = config or PhotoTypeConfig()
    unknown = [k for k in probabilities if k not in PHOTO_TYPES]
    if unknown:
        raise ValueError(f"unknown photo types {unknown}; expected {PHOTO_TYPES}")
    p = {t: float(probabilities.get(t, 0.0)) for t in PHOTO_TYPES}
    if any(not math.isfinite(v) or v < 0 for v in p.values()):
        raise ValueError(f"probabilities must be finite and >= 0, got {p}")
    if abs(sum(p.values()) - 1) > 0.01:
        raise ValueError(f"probabilities must sum to 1, got {sum(p.values()):.4f}")
    ext = p["exterior_full"] + p["exterior_closeup"]
    others = {t: v for t, v in p.items() if t not in EXTERIOR_TYPES}
    best_other = max(others, key=others.get)
    if ext >= others[best_other]:
        kind = "exterior_full" if p["exterior_full"] >= p["exterior_closeup"] else "exterior_closeup"
        prob = ext
    else:
        kind, prob = best_other, others[best_other]
    uncertain = prob < cfg.min_confidence
    exterior = kind in EXTERIOR_TYPES
    search = exterior or (uncertain and ext >= cfg.search_if_exterior_at_least)
    keep_state = kind in EXTERIOR_TYPES + ("interior",) or search
    name = TYPE_NAMES[kind]
    if exterior:
        what = "searched for exterior damage"
    elif search:
        what = f"searched for exterior damage anyway (P(exterior) {ext:.2f} >= {cfg.search_if_exterior_at_least:.2f})"
    elif kind == "interior":
        what = "not searched for exterior damage; car-state heads kept"
    elif kind == "no_vehicle":
        what = "no vehicle in the photo: not assessed"
    else:
        what = "listed, not searched for exterior damage"
    reason = f"{name} (P={prob:.2f}): {what}"
    if uncertain:
        runner = max((t for t in PHOTO_TYPES if t != kind and not (exterior and t in EXTERIOR_TYPES)), key=p.get)
        reason += f"; uncertain type (P < {cfg.min_confidence:.2f}, next: {TYPE_NAMES[runner]} {p[runner]:.2f})"
    return PhotoTypeDecision(type=kind, probability=round(prob, 4), exterior_probability=round(ext, 4),
                             uncertain=uncertain, search_exterior_damage=search, keep_state_heads=keep_state,
                             reason=reason, probabilities={t: round(v, 4) for t, v in p.items()})
