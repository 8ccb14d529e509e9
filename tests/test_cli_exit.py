"""Exit codes of the command line, through its real entry point (``carcheck.cli.main``):
0 every file read, 1 a file could not be read, 2 usage error (missing weights file, bad option,
bad training data), 3 an internal error (never 1). Training commands on bad data end with a clear
message, not a traceback."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from PIL import Image

from carcheck.cli import INTERNAL_ERROR, main
from carcheck.models.inference import DEFAULT_SEGMENTERS

from conftest import data_path

needs_models = pytest.mark.skipif(not all(p.exists() for p in DEFAULT_SEGMENTERS),
                                  reason="shipped segmenter weights missing")


def run(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``carcheck ARGS`` through :func:`carcheck.cli.main`: (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["carcheck", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    code = e.value.code
    return (0 if code is None else code), out.out + out.err


@pytest.fixture(scope="module")
def assessor():
    if not all(p.exists() for p in DEFAULT_SEGMENTERS):
        pytest.skip("shipped segmenter weights missing")
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig

    return Assessor(AssessConfig(gradcam=False))


@pytest.fixture
def loaded(monkeypatch, assessor):
    """``carcheck assess`` uses the module's Assessor (models loaded once)."""
    import carcheck.pipeline.assess as pa

    monkeypatch.setattr(pa, "Assessor", lambda *a, **k: assessor)
    return assessor


@pytest.fixture(scope="module")
def photo():
    return sorted((data_path("car_parts") / "testset" / "JPEGImages").glob("*.jpg"))[0]


@needs_models
def test_0_every_file_read(monkeypatch, capsys, loaded, photo, tmp_path):
    code, out = run(monkeypatch, capsys, "assess", str(photo), "--out", str(tmp_path / "out"), "--case-id", "ok")
    assert code == 0, out
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["summary"]["failed"] == 0 and rep["photos"][0]["status"] == "assessed"


@needs_models
def test_1_a_file_could_not_be_read(monkeypatch, capsys, loaded, photo, tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(photo, case / photo.name)
    (case / "notes.jpg").write_text("not a photo")
    code, out = run(monkeypatch, capsys, "assess", str(case), "--out", str(tmp_path / "out"))
    assert code == 1, out
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["summary"]["failed"] == 1 and rep["summary"]["assessed"] == 1  # the report is written all the same


@needs_models
def test_2_missing_weights_file(monkeypatch, capsys, photo, tmp_path):
    missing = tmp_path / "nope.safetensors"
    code, out = run(monkeypatch, capsys, "assess", str(photo), "--out", str(tmp_path / "out"), "--weights", str(missing))
    assert code == 2, out
    assert "nope.safetensors" in out and "Traceback" not in out


def test_2_bad_option_value(monkeypatch, capsys, tmp_path):
    photo = tmp_path / "a.jpg"
    Image.new("RGB", (80, 80)).save(photo)
    code, out = run(monkeypatch, capsys, "assess", str(photo), "--out", str(tmp_path / "out"), "--engine", "tpu")
    assert code == 2 and "engine" in out and "Traceback" not in out, out
    code, out = run(monkeypatch, capsys, "assess", str(photo), "--out", str(tmp_path / "o2"),
                    "--review-threshold", "1.5")
    assert code == 2 and "review_threshold" in out, out


@needs_models
def test_3_a_crash_is_3_never_1(monkeypatch, capsys, loaded, photo, tmp_path):
    def boom(*a, **k):
        raise RuntimeError("a bug in the pipeline")

    monkeypatch.setattr(loaded, "assess", boom)
    code, out = run(monkeypatch, capsys, "assess", str(photo), "--out", str(tmp_path / "out"))
    assert code == INTERNAL_ERROR == 3
    assert "internal error" in out and "RuntimeError" in out


# ------------------------------------------------------------------ train on bad data: exit 2, no traceback
def _bad_csv(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("file,label\nnope1.jpg,a\nnope2.jpg,b\nnope3.jpg,a\nnope4.jpg,b\n")
    return f


@pytest.mark.parametrize("case", ["segmentation_bad_json", "segmentation_missing_file", "classifier_one_class",
                                  "classifier_unreadable_photos", "classifier_missing_data", "verification_no_pairs",
                                  "standalone_no_identities"])
def test_train_on_bad_data_is_a_clear_usage_error(monkeypatch, capsys, tmp_path, case):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"images": 3}')
    one = tmp_path / "one.csv"
    one.write_text("file,label\nx.jpg,a\n")
    out = str(tmp_path / "run")
    cache = str(tmp_path / "cache")
    args = {
        "segmentation_bad_json": ["segmentation", "--task", f"damage:damage_type:{bad_json}", "--out", out],
        "segmentation_missing_file": ["segmentation", "--task", f"damage:damage_type:{tmp_path / 'no.json'}"],
        "classifier_one_class": ["classifier", "--data", str(one), "--task", "damaged", "--out", out],
        "classifier_unreadable_photos": ["classifier", "--data", str(_bad_csv(tmp_path)), "--task", "damaged",
                                         "--out", out, "--cache-dir", cache, "--epochs", "1"],
        "classifier_missing_data": ["classifier", "--data", str(tmp_path / "missing"), "--task", "damaged",
                                    "--out", out],
        "verification_no_pairs": ["verification", "--data", str(_bad_csv(tmp_path)), "--out", out,
                                  "--cache-dir", cache, "--epochs", "1"],
        "standalone_no_identities": ["standalone", "--data", str(_bad_csv(tmp_path)), "--task", "verification",
                                     "--out", out, "--epochs", "1"],
    }[case]
    code, text = run(monkeypatch, capsys, "train", *args)
    assert code == 2, text
    assert "Traceback" not in text and "internal error" not in text
    assert "error" in text.lower() or "invalid value" in text.lower()
