"""The assessment reads the VIN (issue 30 item 2) on the demo's VIN-plate photo, and runs no OCR on an
exterior photo."""

from __future__ import annotations

import pytest

from conftest import data_path


@pytest.fixture(scope="module")
def assessor():
    from carcheck.pipeline.assess import Assessor

    return Assessor()


def test_demo_vin_plate_gives_porsche_by_wmi_and_exterior_photo_runs_no_ocr(assessor, monkeypatch):
    from carcheck.models import ocr

    case = data_path("cases/salvage_panamera_167111")
    calls = []
    real = ocr.read_text
    monkeypatch.setattr(ocr, "read_text", lambda image, **k: (calls.append(image.shape), real(image, **k))[1])

    report, _ = assessor.assess([case / "167111-02.png"])  # an exterior full view
    assert report.photos[0].photo_type.type == "exterior_full"
    assert calls == [] and (report.vehicle is None or report.vehicle.vin is None)

    report, _ = assessor.assess([case / "167111-09.png"])  # the VIN plate through the windscreen
    assert report.photos[0].photo_type.type == "vin_dashboard"
    assert len(calls) == 1
    vin = report.vehicle.vin
    assert (vin.text, vin.complete, vin.wmi, vin.manufacturer) == ("WP0AJ297XM", False, "WP0", "Porsche")
    assert vin.photo == report.photos[0].path
