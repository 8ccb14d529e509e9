"""OCR (issue 30 item 2): the wrapper reads rendered text with the package's own weights and no network;
the case step runs it only on VIN / dashboard and document photos and fills ``vehicle.vin`` / ``odometer``."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from carcheck.models import ocr
from carcheck.models.ocr import TextLine
from carcheck.pipeline.vehicle_text import vehicle_text
from carcheck.schema import ClassScore, PhotoTypeDecision, VehicleIdentity


def _render(text: str, size=(900, 160)) -> np.ndarray:
    img = Image.new("RGB", size, (235, 235, 235))
    ImageDraw.Draw(img).text((30, 40), text, fill=(20, 20, 20), font=ImageFont.load_default(size=56))
    return np.asarray(img)


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""
    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_reads_a_rendered_vin_with_bundled_weights_and_no_network(no_network, monkeypatch):
    monkeypatch.setattr(ocr, "_engine", None)  # the engine is built here, under the no-network patch
    lines = ocr.read_text(_render("1HGCM82633A004352"))
    text = "".join(ln.text for ln in lines).replace(" ", "")
    assert text == "1HGCM82633A004352"
    assert all(0 < ln.score <= 1 and len(ln.box) == 4 for ln in lines)
    assert ocr.engine() is ocr.engine()  # built once per process


def test_read_text_rejects_non_uint8_and_takes_rgba(monkeypatch):
    with pytest.raises(ValueError):
        ocr.read_text(np.zeros((10, 10, 3), np.float32))
    calls = []
    monkeypatch.setattr(ocr, "_engine", lambda img, **k: (calls.append(img.shape), ([], None))[1])
    assert ocr.read_text(np.zeros((20, 30, 4), np.uint8)) == []
    assert calls == [(20, 30, 3)]


# --------------------------------------------------------------------------------- the case step
def _photo(name, ptype, status="skipped"):
    ext = ptype.startswith("exterior")
    d = PhotoTypeDecision(type=ptype, probability=0.99, exterior_probability=0.99 if ext else 0.01, uncertain=False,
                          search_exterior_damage=ext, keep_state_heads=ptype == "interior", reason="",
                          probabilities={ptype: 0.99})
    return SimpleNamespace(path=name, status=status, photo_type=d, review_reasons=[])


def _fake_ocr(texts: dict):
    seen = []

    def read(image):
        name = texts["__by_shape__"][image.shape[0]]
        seen.append(name)
        return [TextLine(t, ((0, 30 * i), (100, 30 * i), (100, 30 * i + 20), (0, 30 * i + 20)), 0.9)
                for i, t in enumerate(texts.get(name, []))]
    return read, seen


def _case(vehicle=None):
    photos = [_photo("ext.jpg", "exterior_full", "assessed"), _photo("vin.jpg", "vin_dashboard"),
              _photo("doc.jpg", "document"), _photo("int.jpg", "interior", "assessed")]
    files = [Path(p.path) for p in photos]
    heights = {"ext.jpg": 10, "vin.jpg": 11, "doc.jpg": 12, "int.jpg": 13}
    images = {Path(k): np.zeros((h, 8, 3), np.uint8) for k, h in heights.items()}
    texts = {"__by_shape__": {h: k for k, h in heights.items()},
             "vin.jpg": ["ODO", "155501", "WPOAJ297XM"], "doc.jpg": ["VIN", "WP0AJ297"],
             "ext.jpg": ["1HGCM82633A004352"], "int.jpg": ["ODO", "99999"]}
    report = SimpleNamespace(photos=photos, vehicle=vehicle)
    return report, files, images, texts


def _run(report, files, images, texts):
    report.vehicle = vehicle_text(report.photos, files, images.__getitem__, report.vehicle, ocr=_fake_ocr(texts)[0])


def test_ocr_runs_only_on_vin_dashboard_and_document_photos_and_fills_vehicle():
    report, files, images, texts = _case()
    read, seen = _fake_ocr(texts)
    report.vehicle = vehicle_text(report.photos, files, images.__getitem__, None, ocr=read)
    assert seen == ["vin.jpg", "doc.jpg"]
    v = report.vehicle  # no make/model head: created for the VIN / odometer
    assert v.known_models == 0 and v.make_top3 == []
    assert (v.vin.text, v.vin.complete, v.vin.manufacturer, v.vin.photo) == ("WP0AJ297XM", False, "Porsche", "vin.jpg")
    assert v.vin.agrees_with_make_model is None
    assert (v.odometer.value, v.odometer.photo) == (155501, "vin.jpg")


def _identity(make, in_scope=True):
    return VehicleIdentity(make_model_top3=[ClassScore(label=f"{make}_X_2012", probability=0.6)],
                           make_top3=[ClassScore(label=make, probability=0.6)], in_scope=in_scope, known_models=196)


def test_vin_disagreeing_with_make_model_is_a_review_reason_and_agreeing_is_not():
    report, files, images, texts = _case(_identity("Mercedes-Benz"))
    _run(report, files, images, texts)
    assert report.vehicle.vin.agrees_with_make_model is False
    vin_photo = next(p for p in report.photos if p.path == "vin.jpg")
    assert len(vin_photo.review_reasons) == 1 and "disagrees with make/model (Mercedes-Benz)" in vin_photo.review_reasons[0]
    assert all(not p.review_reasons for p in report.photos if p.path != "vin.jpg")

    report, files, images, texts = _case(_identity("Porsche"))
    _run(report, files, images, texts)
    assert report.vehicle.vin.agrees_with_make_model is True
    assert all(not p.review_reasons for p in report.photos)

    report, files, images, texts = _case(_identity("Mercedes-Benz", in_scope=False))  # not a known model
    _run(report, files, images, texts)
    assert report.vehicle.vin.agrees_with_make_model is None


def test_no_text_photo_leaves_the_report_alone():
    report, files, images, texts = _case()
    texts["vin.jpg"], texts["doc.jpg"] = ["hello"], []
    _run(report, files, images, texts)
    assert report.vehicle is None


def test_odometer_is_read_on_dashboard_photos_only():
    report, files, images, texts = _case()
    texts["vin.jpg"], texts["doc.jpg"] = ["WPOAJ297XM"], ["ODO", "123456 km"]
    _run(report, files, images, texts)
    assert report.vehicle.vin.text == "WP0AJ297XM" and report.vehicle.odometer is None
