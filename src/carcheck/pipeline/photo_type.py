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

Damage-aware second opinion (issue 26): the head above was trained without damaged cars, and typed 4.8%
of CarDD's validation photos (all damage close-ups; a shattered windscreen as "no vehicle") confidently
non-exterior, so they were never searched. A second head of the same design, trained on the same recipe plus
1,059 damaged exterior photos from the training splits of CarDD, lensor, lplenka and VDS
(``classifier_photo_type_damage_aware_lite0``), is consulted only for a photo the first head leaves out: it is
searched when that head's P(exterior) reaches :attr:`PhotoTypeConfig.search_if_damage_aware_exterior_at_least`
(0.9). It does not replace the first head because it is less sure of real interiors (door-opening views of
seats): alone it would search 76 of the dev cases' 130 non-exterior photos instead of 38; as a second opinion
it searches 787 of 793 CarDD valid photos instead of 755 and the same 38 dev non-exterior photos
(bench/studies/photo_type_gate.py); in the assessment the 38 CarDD valid photos the first head leaves out
get a damage finding on 33 instead of 20 (a "no vehicle" photo still meets the presence gate;
bench/studies/photo_type_rescue_effect.py).

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


def decide_photo_type(probabilities: Mapping[str, float], config: PhotoTypeConfig | None = None,
                      damage_aware_exterior: float | None = None) -> PhotoTypeDecision:
    """Type of one photo from the head's probabilities (see the module doc for the rule).

    Args:
        probabilities: ``{type: probability}`` over :data:`PHOTO_TYPES` (missing types count 0).
        config: thresholds.
        damage_aware_exterior: P(exterior) (both exterior types summed) of the damage-aware head, or None
            (not installed). It only adds a photo to the damage search (module doc); the type stays the
            first head's.
    Raises:
        ValueError: an unknown type, a negative or non-finite probability, or a sum not within 1 +- 0.01;
            ``damage_aware_exterior`` outside [0, 1].
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
    if damage_aware_exterior is not None and not 0 <= damage_aware_exterior <= 1 + 1e-6:
        raise ValueError(f"damage_aware_exterior must be in [0, 1], got {damage_aware_exterior}")
    rescue = cfg.search_if_damage_aware_exterior_at_least
    rescued = (not search and damage_aware_exterior is not None and rescue is not None
               and damage_aware_exterior >= rescue)
    search = search or rescued
    keep_state = kind in EXTERIOR_TYPES + ("interior",) or search
    name = TYPE_NAMES[kind]
    if exterior:
        what = "searched for exterior damage"
    elif rescued:
        what = (f"searched for exterior damage anyway: the damage-aware head calls it exterior "
                f"(P={damage_aware_exterior:.2f} >= {rescue:.2f})")
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
                             reason=reason, probabilities={t: round(v, 4) for t, v in p.items()},
                             damage_aware_exterior_probability=(None if damage_aware_exterior is None or rescue is None
                                                                else round(damage_aware_exterior, 4)))
