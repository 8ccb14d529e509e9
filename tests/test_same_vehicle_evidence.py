"""Same vehicle from several kinds of evidence (pipeline/same_vehicle.py, identity.evidence_same_vehicle_check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carcheck.pipeline.identity import evidence_same_vehicle_check
from carcheck.pipeline.same_vehicle import (FEATURES, PhotoIdentity, SameVehicleModel, body_colour_lab,
                                            pair_features)

PARTS = ["back_bumper", "back_glass", "front_left_door", "wheel"]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 - torch.nn.functional.cosine_similarity(a, b)


def _photo(emb, lab, probs=(0.7, 0.2, 0.1), exterior=True, closeup=False) -> PhotoIdentity:
    p = np.array(probs, np.float32)
    return PhotoIdentity(exterior=exterior, closeup=closeup, embedding=torch.tensor(emb, dtype=torch.float32),
                         model_probs=p, make_probs=p, lab=np.array(lab, np.float32))


#: A hand-set model: far embeddings, different beliefs and colours all lower P(same).
MODEL = SameVehicleModel(mean=[0.0] * 6, scale=[1.0] * 6, fill=[0.3, 0.5, 0.5, 10, 10, 0],
                         coef=[-8.0, 2.0, 2.0, -0.1, -0.2, 0.0], intercept=2.0, threshold=0.5)


def test_body_colour_is_the_median_of_body_panels_only():
    img = np.zeros((60, 40, 3), np.uint8)
    img[:] = (0, 0, 255)  # blue background and glass
    lab = np.zeros((60, 40), np.uint8)
    lab[0:30, :] = 2  # back_glass (1,200 px): not body, stays blue
    lab[35:55, :] = 3  # front_left_door (800 px): body
    img[35:55, :] = (200, 20, 20)  # red door
    c = body_colour_lab(img, lab, PARTS)
    assert c is not None and c[1] > 40 and c[2] > 20  # red (a*, b* > 0), not blue (b* < 0)
    assert body_colour_lab(img, np.zeros((60, 40), np.uint8), PARTS) is None  # no body pixels


def test_pair_features_of_identical_photos():
    a = _photo([1, 0, 0], [50, 40, 30])
    f = pair_features(a, a, cosine)
    assert len(f) == len(FEATURES)
    assert f[0] == pytest.approx(0, abs=1e-6) and f[1] == pytest.approx(1) and f[3] == 0 and f[4] == 0
    b = PhotoIdentity(exterior=True, closeup=True, embedding=torch.tensor([0.0, 1, 0]))
    g = pair_features(a, b, cosine)
    assert np.isnan(g[1]) and np.isnan(g[3]) and g[5] == 1  # missing evidence is NaN, filled by the model


def test_the_odd_car_is_flagged_and_non_exterior_photos_are_never_compared():
    photos = {f"p{i}.jpg": _photo([1, 0.05 * i, 0], [60, 30, 20]) for i in range(4)}
    photos["odd.jpg"] = _photo([0, 1, 0], [40, -20, -30], probs=(0.05, 0.15, 0.8))
    photos["interior.jpg"] = _photo([0, 0, 1], [10, 0, 0], probs=(0.1, 0.1, 0.8), exterior=False)
    res = evidence_same_vehicle_check(photos, MODEL, cosine)
    assert res.consistency.different_vehicle == ["odd.jpg"]
    assert "interior.jpg" not in res.matches and res.consistency.checked_photos == 5
    assert all(m.same_vehicle for k, m in res.matches.items() if k != "odd.jpg")
    assert res.consistency.reference in {f"p{i}.jpg" for i in range(4)}


def test_one_exterior_photo_is_not_compared():
    res = evidence_same_vehicle_check({"a.jpg": _photo([1, 0, 0], [50, 0, 0]),
                                       "b.jpg": _photo([0, 1, 0], [50, 0, 0], exterior=False)}, MODEL, cosine)
    assert res.matches == {} and res.consistency.different_vehicle == []


def test_calibration_round_trip_and_feature_check():
    d = MODEL.to_dict()
    m = SameVehicleModel.from_dict(d)
    x = np.array([[0.1, 0.9, 0.9, 2, 3, 0]])
    assert m.p_same(x) == pytest.approx(MODEL.p_same(x))
    with pytest.raises(ValueError, match="features"):
        SameVehicleModel.from_dict({**d, "features": ["d_embedding"]})


def test_flagged_photos_are_those_whose_distance_is_above_the_stated_threshold():
    photos = {f"p{i}.jpg": _photo([1, 0.05 * i, 0], [60, 30, 20]) for i in range(4)}
    photos["odd.jpg"] = _photo([0, 1, 0], [40, -20, -30], probs=(0.05, 0.15, 0.8))
    res = evidence_same_vehicle_check(photos, MODEL, cosine)
    t = res.consistency.threshold
    assert t == pytest.approx(1 - MODEL.threshold)
    assert {k for k, m in res.matches.items() if m.distance > t} == set(res.consistency.different_vehicle)
