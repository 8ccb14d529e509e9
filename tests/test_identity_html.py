"""The HTML shows the VIN and odometer beside make/model (issue 30 item 2), and a Porsche by the VIN's WMI
when the make/model head does not know the car (the demo Panamera)."""

from __future__ import annotations

from pathlib import Path

from carcheck.report.html import vehicle_line, vehicle_text_lines, write_report
from carcheck.schema import CaseReport, ClassScore, VehicleIdentity
from carcheck.schema.vehicle import OdometerReading, VinReading

FIXTURE = Path(__file__).parent / "fixtures" / "review_report_panamera.json"


def _report() -> CaseReport:
    return CaseReport.model_validate_json(FIXTURE.read_text(encoding="utf-8"))


def test_old_report_without_vin_renders_as_before():
    r = _report()
    assert r.vehicle.vin is None and vehicle_text_lines(r) == []
    assert vehicle_line(r) == "not one of the known models (the classifier knows 32)"


def test_out_of_scope_make_model_names_the_vins_manufacturer(tmp_path):
    r = _report()
    r.vehicle.vin = VinReading(text="WP0AJ297XM", complete=False, wmi="WP0", manufacturer="Porsche",
                               photo="167111-09.png")
    r.vehicle.odometer = OdometerReading(value=155501, unit="km", photo="dash.jpg", confidence=0.99)
    assert vehicle_line(r).startswith("Porsche (by the VIN's WMI WP0")
    html = write_report(r, {}, tmp_path)["html"].read_text(encoding="utf-8")
    assert "Porsche (by the VIN&#39;s WMI WP0" in html or "Porsche (by the VIN's WMI WP0" in html
    assert "VIN WP0AJ297XM (partial: 10 of 17 characters read; check digit n/a) · WMI WP0: Porsche" in html
    assert "Odometer 155,501 km" in html and "from dash.jpg" in html


def test_disagreeing_vin_is_flagged_and_no_head_case_reads():
    r = _report()
    r.vehicle = VehicleIdentity(make_model_top3=[ClassScore(label="Mercedes-Benz_C-Class_Sedan_2012", probability=0.8)],
                                make_top3=[ClassScore(label="Mercedes-Benz", probability=0.8)], in_scope=True,
                                known_models=196,
                                vin=VinReading(text="WP0AJ297XM", complete=False, wmi="WP0", manufacturer="Porsche",
                                               agrees_with_make_model=False))
    (line, flag), = vehicle_text_lines(r)
    assert flag and "DISAGREES with make/model" in line
    r.vehicle = VehicleIdentity(make_model_top3=[], make_top3=[], in_scope=False, known_models=0,
                                odometer=OdometerReading(value=1409, unit="unknown", confidence=0.5))
    assert vehicle_line(r) == "no make/model classifier"
    assert vehicle_text_lines(r) == [("Odometer 1,409 (unit not read) · OCR confidence 0.50", False)]
