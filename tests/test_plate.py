"""Licence-plate text (issue 30 item 2): what counts as a plate read, the case's plate and each photo's
agreement, the override of the appearance check, and the wiring through a real assessment (real OCR on
plates drawn into real photos; the plate regions are given, as the privacy head would give them)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from carcheck.models import ocr
from carcheck.pipeline.plate import (PlateRead, apply_plate_evidence, edit_distance, fold, mask_plate,
                                     plate_decisions, plate_text, read_plates)
from carcheck.schema import Consistency, VehicleMatch

from conftest import data_path


def _plate_image(text: str, size=(260, 70)) -> np.ndarray:
    img = Image.new("RGB", size, (245, 245, 245))
    d = ImageDraw.Draw(img)
    d.rectangle([2, 2, size[0] - 3, size[1] - 3], outline=(120, 20, 40), width=3)
    d.text((22, 8), text, fill=(120, 20, 40), font=ImageFont.load_default(size=46))
    return np.asarray(img)


# ------------------------------------------------------------------------------- rules (pure)
@pytest.mark.parametrize("lines, want", [
    ([("622·WHV", 0.9), ("QUEENSLAND-SUNSHINE STATE", 0.95)], "622WHV"),
    ([("COLD COAST CAR", 0.93)], None),          # a dealer's plate cover: no digit
    ([("HOLESALE", 0.99), ("8643", 1.0)], None),  # a phone number: too short, no letter
    ([("RXF455", 0.97), ("HAWAII", 0.91)], "RXF455"),
    ([("622-WHV", 0.6)], None),                   # below the score
    ([("AB12", 0.99)], None),                     # too short
])
def test_plate_text_keeps_registrations_only(lines, want):
    got = plate_text(lines)
    assert (got[0] if got else None) == want


def test_fold_mask_distance():
    assert fold("378WOK") == fold("378WQK") == "378W0K"
    assert mask_plate("622WHV") == "•••WHV" and mask_plate("AB") == "AB"
    assert edit_distance("622WHV", "622WHV") == 0 and edit_distance("622WHV", "62WHV") == 1
    assert edit_distance("622WHV", "779MYA") == 6


def _r(t):
    return PlateRead(t, 0.9, 200)


def test_case_plate_needs_two_reads_and_a_clear_majority():
    assert plate_decisions({"a": _r("622WHV"), "b": None}) == (None, {})
    assert plate_decisions({"a": _r("622WHV"), "b": _r("779MYA")}) == (None, {})  # tie
    plate, dec = plate_decisions({"a": _r("622WHV"), "b": _r("622WHV"), "c": _r("622WH"), "d": _r("779MYA"),
                                  "e": _r("378WOK"), "f": None})
    assert plate == "622WHV"
    assert dec == {"a": True, "b": True, "c": True, "d": False, "e": False}
    # one misread character is the same plate: two reads one character apart make a case plate
    assert plate_decisions({"a": _r("343EG6"), "b": _r("343E66"), "c": _r("779MYA")}) == \
        ("343EG6", {"a": True, "b": True, "c": False})
    # compared folded (O/Q -> 0), named as read
    assert plate_decisions({"a": _r("378WQK"), "b": _r("378WOK"), "c": _r("378WQK")}) == \
        ("378WQK", {"a": True, "b": True, "c": True})


def test_plate_evidence_overrides_appearance():
    res = SimpleNamespace(
        consistency=Consistency(checked_photos=3, threshold=0.5, reference="a", different_vehicle=["b"], note="x"),
        matches={k: VehicleMatch(distance=0.2, same_vehicle=k != "b", reference="a") for k in "abc"})
    apply_plate_evidence(res, {"b": True, "c": False}, "•••WHV")
    assert res.consistency.different_vehicle == ["c"]
    assert res.matches["b"].same_vehicle and res.matches["b"].plate_agrees is True
    assert not res.matches["c"].same_vehicle and res.matches["c"].plate_agrees is False
    assert res.matches["a"].plate_agrees is None
    assert "•••WHV" in res.consistency.note


def test_read_plates_crops_wide_regions_at_stored_resolution():
    image = np.zeros((400, 800, 3), np.uint8)
    image[100:140, 200:360] = 255
    seen = []

    def reader(crop):
        seen.append(crop.shape)
        return [("622 WHV", 0.9)] if crop.mean() > 200 else [("779 MYA", 0.85)]

    regions = [SimpleNamespace(kind="plate", bbox_xywh=(100, 50, 80, 20), score=0.9),   # x2: 160 x 40 px
               SimpleNamespace(kind="face", bbox_xywh=(0, 0, 100, 100), score=0.9),
               SimpleNamespace(kind="plate", bbox_xywh=(10, 10, 20, 8), score=0.9)]     # x2: 40 px: too narrow
    got = read_plates(image, regions, 2.0, reader)
    assert got == PlateRead("622WHV", 0.9, 160)
    assert seen == [(40, 160, 3)]
    # the widest region first; the next only when the wider one does not read as a plate
    regions.append(SimpleNamespace(kind="plate", bbox_xywh=(300, 100, 90, 20), score=0.9))  # x2: 180 px, dark
    seen.clear()
    assert read_plates(image, regions, 2.0, reader).text == "779MYA" and seen == [(40, 180, 3)]
    assert read_plates(image, regions, 2.0, lambda c: [("GOLD COAST", 0.99)] if c.shape[1] == 180 else reader(c)
                       ).text == "622WHV"


def test_the_plate_reader_reads_a_rendered_plate():
    lines = ocr.read_plate(_plate_image("622·WHV"))
    assert plate_text(lines)[0] == "622WHV"
    with pytest.raises(ValueError):
        ocr.read_plate(np.zeros((10, 10), np.uint8))


# ------------------------------------------------------------------------------- through an assessment
def test_a_photo_with_another_plate_is_flagged_and_the_report_keeps_plates_masked(tmp_path):
    from carcheck.pipeline.assess import Assessor
    from carcheck.report.html import vehicle_text_lines

    src = data_path("cases/salvage_panamera_167111")
    plates = {"167111-02.png": "622·WHV", "167111-03.png": "622·WHV", "167111-05.png": "779·MYA"}
    boxes = {}
    for name, text in plates.items():
        im = Image.open(src / name).convert("RGB")
        x, y = im.width // 3, im.height // 2
        im.paste(Image.fromarray(_plate_image(text)), (x, y))
        im.save(tmp_path / name)
        boxes[name] = (x, y, 260, 70, im.width)
    a = Assessor()
    current = {}

    def regions(features, size):  # what the privacy head would find: the drawn plate, in px of the input
        x, y, w, h, full = current["box"]
        s = size[1] / full
        return [SimpleNamespace(kind="plate", bbox_xywh=tuple(int(v * s) for v in (x, y, w, h)), score=0.95)]

    a.privacy.regions_from_features = regions
    real_screen = a.screen_photo

    def screen(f, loaded):
        current["box"] = boxes[Path(f).name]
        return real_screen(f, loaded)

    a.screen_photo = screen
    report, _ = a.assess(sorted(tmp_path.glob("*.png")), case_id="plates")
    by = {Path(p.path).name: p for p in report.photos}
    exterior = [n for n in plates if by[n].vehicle_match is not None]
    assert set(exterior) == set(plates), "the three photos are exterior views of the demo car"
    assert report.consistency.plate == "•••WHV"
    assert by["167111-05.png"].plate.masked == "•••MYA" and by["167111-05.png"].plate.agrees_with_case is False
    assert [Path(n).name for n in report.consistency.different_vehicle] == ["167111-05.png"]
    assert by["167111-02.png"].plate.agrees_with_case is True and by["167111-02.png"].vehicle_match.same_vehicle
    text = json.dumps(report.model_dump(mode="json"), ensure_ascii=False)
    assert "622WHV" not in text and "779MYA" not in text and "WHV" in text
    line, flag = vehicle_text_lines(report)[0]
    assert "•••WHV" in line and flag
