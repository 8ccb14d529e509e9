"""VIN and odometer rules (issue 30 item 2): pure functions on OCR text, no model."""

from __future__ import annotations

import pytest

from carcheck.pipeline import odometer as odo
from carcheck.pipeline import vin as V
from carcheck.schema import CaseReport, VehicleIdentity
from carcheck.schema.vehicle import OdometerReading, VinReading


# ----------------------------------------------------------------------------------------------- VIN
def test_check_digit_known_vins():
    # 49 CFR 565 worked examples: a Honda (digit 3) and the textbook example whose digit is X
    assert V.check_digit("1HGCM82633A004352") == "3"
    assert V.check_digit("1M8GDM9AXKP042788") == "X"
    assert V.check_digit_valid("1HGCM82633A004352") is True
    assert V.check_digit_valid("1HGCM82643A004352") is False  # position 9 changed: North American, must hold
    with pytest.raises(ValueError):
        V.check_digit("1HGCM82633A00435")


def test_check_digit_outside_north_america_is_none_unless_it_holds():
    assert V.check_digit_valid("WP0ZZZ97ZBL000123") is None  # European VIN, digit Z does not hold: rule n/a
    assert V.check_digit_valid("WP0ZZZ97XBL000123") is True  # built to the rule (X is its digit)
    assert V.check_digit_valid("WP0AJ297") is None  # partial


def test_confusions_fixed_only_for_letters_a_vin_cannot_hold():
    assert V.normalize_vin_chars("wpoaj2q7i") == "WP0AJ2071"
    # S, B, Z, G are VIN letters: kept as read
    assert V.normalize_vin_chars("SBZG") == "SBZG"
    r, _ = V.find_vin([("1HGCM82633A0O4352", 0.9)])  # O where a 0 must be
    assert r.text == "1HGCM82633A004352" and r.complete and r.check_digit_valid is True


def test_complete_vin_with_label_and_groups():
    r, score = V.find_vin([("VIN: 1HG CM826 33A004352", 0.8)], photo="p.jpg")
    assert r.text == "1HGCM82633A004352" and r.complete
    assert r.wmi == "1HG" and r.manufacturer == "Honda US" and r.photo == "p.jpg" and score == 0.8


def test_partial_read_kept_as_partial_and_anchored_on_a_known_wmi():
    r, _ = V.find_vin([("WPOAJ297XM", 0.88)])
    assert (r.text, r.complete, r.check_digit_valid, r.wmi, r.manufacturer) == (
        "WP0AJ297XM", False, None, "WP0", "Porsche")
    # an unanchored run (engine number, model code of an unknown WMI) is not a VIN
    assert V.find_vin([("CSZ051128", 0.9), ("2021-10-11", 0.9), ("WP9A1207", 0.9)]) is None


def test_words_are_not_a_vin_and_a_partial_on_a_known_wmi_wins():
    lines = [("Vehicle License of the People's Republic of China", 0.93), ("WPOAJ297", 0.96)]
    r, _ = V.find_vin(lines)
    assert r.text == "WP0AJ297" and r.manufacturer == "Porsche"


def test_complete_vin_needs_numeric_last_four():
    assert V.find_vin([("ABCDEFGHJKLMNPRST", 0.9)]) is None


def test_wmi_table_prefix_and_exact_entries():
    t = V.load_wmi_table()
    assert V.decode_wmi("JTDKB20U093000001", t).makes == ("Toyota",)  # JT prefix
    assert V.decode_wmi("JTHBK1GG0D2000001", t).makes == ("Lexus",)  # 3-character entry beats the prefix
    assert V.decode_wmi("WP1ZZZ9PZ", t).manufacturer.startswith("Porsche")
    assert V.decode_wmi("ZZZ", t) is None
    for wmi in ("WP0", "WP1", "WVW", "WAU", "WBA", "WDD", "JT", "JHM", "JN1", "JM1", "JF1", "KMH", "KNA", "1FA",
                "1G1", "6G1", "JTH", "1C4", "1J4"):
        assert wmi in t, wmi


def test_agreement_with_make_model():
    r, _ = V.find_vin([("WP0AJ297XM", 0.9)])
    assert V.agrees_with_make(r, "Porsche") is True
    assert V.agrees_with_make(r, "Mercedes-Benz") is False
    assert V.agrees_with_make(r, None) is None
    unknown = VinReading(text="ZZZ12345678901234", complete=True, wmi="ZZZ")
    assert V.agrees_with_make(unknown, "Porsche") is None
    chrysler = V.find_vin([("1C4RJFAG5FC000001", 0.9)])[0]
    assert V.agrees_with_make(chrysler, "Jeep") is True  # a WMI used for several brands


def test_best_vin_prefers_holding_check_digit_then_known_wmi_then_complete():
    partial = (V.find_vin([("WP0AJ297", 0.99)])[0], 0.99)
    full = (V.find_vin([("1HGCM82633A004352", 0.5)])[0], 0.5)
    assert V.best_vin([partial, full]).text == "1HGCM82633A004352"
    assert V.best_vin([]) is None


# ------------------------------------------------------------------------------------------ odometer
def L(text, x0, y0, x1, y1, score=0.95):
    return odo.OcrLine(text, score, (x0, y0, x1, y1))


def test_dial_scales():
    assert odo.is_dial_scale("100120140")
    assert odo.is_dial_scale("120140")
    assert odo.is_dial_scale("2040")
    assert not odo.is_dial_scale("193828")
    assert not odo.is_dial_scale("155501")


def test_odometer_on_a_dashboard_with_scales_clock_trip_and_unit():
    lines = [L("17:40", 400, 10, 450, 30), L("100120140", 500, 50, 640, 80), L("x1000r/min", 100, 100, 200, 120),
             L("km/h", 560, 110, 600, 125), L("155501", 380, 300, 460, 325, 0.99), L("km", 465, 302, 490, 322),
             L("397.4km", 390, 330, 480, 355), L("1.06.2022", 10, 400, 90, 420)]
    r = odo.find_odometer(lines, photo="d.jpg")
    assert (r.value, r.unit, r.photo) == (155501, "km", "d.jpg")
    assert r.confidence == pytest.approx(0.99)


def test_odometer_labelled_odo_beats_more_digits_and_unit_from_the_dial():
    lines = [L("ODO", 100, 100, 140, 115), L("14091", 100, 118, 180, 140, 0.9), L("mph", 300, 50, 330, 60),
             L("1023456", 400, 400, 500, 420, 0.99)]
    r = odo.find_odometer(lines)
    assert (r.value, r.unit) == (14091, "mi")
    assert r.confidence == pytest.approx(0.9)


def test_odometer_unlabelled_is_half_confident_and_short_numbers_are_not_readings():
    r = odo.find_odometer([L("192511", 0, 0, 60, 20, 0.92), L("1108", 0, 100, 40, 120, 0.54)])
    assert r.value == 192511 and r.unit == "unknown" and r.confidence == pytest.approx(0.46)
    assert odo.find_odometer([L("17", 0, 0, 20, 20), L("23°C", 0, 50, 40, 70), L("988.1", 0, 90, 50, 110)]) is None


def test_codes_on_a_document_are_not_readings_but_a_glued_odo_label_is():
    assert odo.find_odometer([L("CSZ051128", 0, 0, 90, 20), L("Engine No.", 0, 30, 90, 50)]) is None
    r = odo.find_odometer([L("ODO183923", 0, 0, 90, 20, 0.8)])
    assert r.value == 183923 and r.confidence == pytest.approx(0.8)


def test_best_odometer():
    a = OdometerReading(value=1, unit="km", confidence=0.4)
    b = OdometerReading(value=2, unit="km", confidence=0.8)
    assert odo.best_odometer([a, b]) is b and odo.best_odometer([]) is None


# ------------------------------------------------------------------------------------------ schema
def test_old_vehicle_sections_still_validate_and_new_ones_round_trip():
    old = {"make_model_top3": [], "make_top3": [], "in_scope": False, "known_models": 32}
    v = VehicleIdentity.model_validate(old)
    assert v.vin is None and v.odometer is None
    v.vin = VinReading(text="WP0AJ297", complete=False, wmi="WP0", manufacturer="Porsche")
    v.odometer = OdometerReading(value=155501, unit="km", confidence=0.9)
    back = VehicleIdentity.model_validate_json(v.model_dump_json())
    assert back.vin.manufacturer == "Porsche" and back.odometer.value == 155501
    with pytest.raises(ValueError):
        OdometerReading(value=1, unit="furlong", confidence=0.5)
    props = CaseReport.model_json_schema()["$defs"]["VehicleIdentity"]["properties"]
    assert "vin" in props and "odometer" in props
