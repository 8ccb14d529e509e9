"""The assessment's same-vehicle check with the shipped calibration (pipeline/same_vehicle.json, issue 30
item 3) on the demo case: only exterior photos are compared, and one car's photos are not flagged."""

from __future__ import annotations

import pytest

from conftest import data_path


@pytest.fixture(scope="module")
def demo():
    from carcheck.pipeline.assess import Assessor

    case = data_path("cases/salvage_panamera_167111")
    a = Assessor()
    if a.same_vehicle is None:
        pytest.fail("the shipped same-vehicle calibration did not load (missing, or fitted on other heads)")
    report, _ = a.assess(sorted(case.glob("*.png")), case_id="panamera")
    return report


def test_only_exterior_photos_are_compared(demo):
    from carcheck.pipeline.photo_type import EXTERIOR_TYPES

    assessed = [p for p in demo.photos if p.status == "assessed"]
    exterior = [p for p in assessed if p.photo_type is not None and p.photo_type.type in EXTERIOR_TYPES]
    others = [p for p in assessed if p not in exterior]
    assert others, "the demo case has VIN, document and interior photos"
    assert all(p.vehicle_match is None for p in others)
    assert all(p.vehicle_match is not None for p in exterior)
    assert demo.consistency.checked_photos == len(exterior)
    assert any(m.role == "same_vehicle" for m in demo.model_files)


def test_one_cars_photos_are_not_flagged(demo):
    assert demo.consistency.different_vehicle == []
    assert "exterior photos agree on one car" in demo.consistency.note
