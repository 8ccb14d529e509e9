"""Issue 20: no file can abort a case or a command. One test per defect found by the fuzz corpus
(bench/accuracy/fuzz.py), each building its bad input for real from real photos.

The model runs share ONE module-scoped Assessor and one case folder (a handful of real photos);
everything else fails or is skipped before the models.
"""

import base64
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from carcheck.cli import app
from carcheck.data.images import ImageLoadError, decode_image, load_image
from carcheck.models.inference import DEFAULT_SEGMENTERS

from conftest import data_path

runner = CliRunner()
needs_models = pytest.mark.skipif(not all(p.exists() for p in DEFAULT_SEGMENTERS), reason="shipped segmenter weights missing")

NON_UTF8 = b"dent \xff\xfe photo.jpg".decode("utf-8", "surrogateescape")  # a name as Python sees it


def _photos(n):
    return sorted((data_path("car_parts") / "testset" / "JPEGImages").glob("*.jpg"))[:n]


def _exif_float_orientation6() -> bytes:
    """An EXIF block as some real cameras write it: orientation 6 plus ResolutionUnit (a SHORT) stored as
    a FLOAT, which Pillow's exif_transpose cannot re-serialise."""
    import struct

    entries = [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x0128, 11, 1, struct.pack("<f", 2.5))]
    b = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, typ, cnt, val in entries:
        b += struct.pack("<HHI", tag, typ, cnt) + val
    return b"Exif\x00\x00" + b + struct.pack("<I", 0)


def _corrupt_avif(src: Path) -> bytes:
    """A real photo as AVIF with a few bits flipped so that Pillow raises RuntimeError (seeded search)."""
    buf = io.BytesIO()
    Image.open(src).convert("RGB").save(buf, "AVIF")
    good = buf.getvalue()
    rng = random.Random(0)
    for _ in range(200):
        x = bytearray(good)
        for _ in range(3):
            x[rng.randrange(len(x))] ^= 1 << rng.randrange(8)
        try:
            with Image.open(io.BytesIO(bytes(x))) as im:
                im.load()
        except RuntimeError:
            return bytes(x)
        except Exception:
            continue
    pytest.skip("no RuntimeError-raising AVIF found in 200 tries")


def _blank_images(case: Path, real: Path) -> None:
    Image.fromarray(np.zeros((300, 400), np.uint16)).save(case / "black16.png")
    Image.fromarray(np.full((300, 400), np.nan, np.float32)).save(case / "nan.tif")
    Image.new("RGBA", (400, 300), (0, 0, 0, 0)).save(case / "transparent.png")
    Image.open(real).convert("RGB").resize((32, 32)).save(case / "thumb32.jpg")


@pytest.fixture(scope="module")
def assessor():
    if not all(p.exists() for p in DEFAULT_SEGMENTERS):
        pytest.skip("shipped segmenter weights missing")
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig

    return Assessor(AssessConfig(gradcam=False))  # Grad-CAM maps are not what these tests are about


@pytest.fixture(scope="module")
def case(tmp_path_factory, assessor):
    """One case folder holding the bad inputs of defects 1, 2, 3, 5, 6 and 9 beside real photos, assessed
    once, report written."""
    real = _photos(5)
    d = tmp_path_factory.mktemp("case")
    c = d / "photos"
    c.mkdir()
    shutil.copy(real[0], c / "plain.jpg")
    Image.open(real[1]).save(c / "exif_float.jpg", "JPEG", exif=_exif_float_orientation6(), quality=92)
    (c / "corrupt.avif").write_bytes(_corrupt_avif(real[2]))
    shutil.copy(real[3], c / NON_UTF8)
    Image.open(real[4]).convert("RGB").resize((12000, 9000), Image.Resampling.BILINEAR).save(c / "phone_108mp.jpg",
                                                                                               quality=90)
    _blank_images(c, real[0])
    os.symlink(d / "gone.jpg", c / "broken_link.jpg")
    os.mkfifo(c / "pipe.jpg")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(c / "sock.jpg"))
    os.symlink(d, c / "link_to_folder")
    (c / "sub").mkdir()
    (c / "sub" / "notes.jpg").write_text("not a photo")
    (c / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    report, visuals = assessor.assess([c], case_id="robust")
    from carcheck.report.html import write_report

    paths = write_report(report, visuals, d / "out", assessor.part_names, assessor.damage_names)
    s.close()
    by = {Path(p.path).name: p for p in report.photos}
    return c, report, by, paths


# ---------------------------------------------------------------- (1) EXIF tag of the wrong type
def test_1_exif_tag_of_wrong_type_is_oriented_not_fatal(tmp_path, case):
    src = _photos(2)[1]
    p = tmp_path / "exif.jpg"
    Image.open(src).save(p, "JPEG", exif=_exif_float_orientation6())
    with pytest.raises(Exception):  # the defect's trigger: Pillow's exif_transpose cannot handle this EXIF
        ImageOps.exif_transpose(Image.open(p))
    w, h = Image.open(src).size
    arr = load_image(p)
    assert arr.shape == (w, h, 3)  # orientation 6 applied: the landscape photo is now portrait
    assert np.abs(arr.astype(int) - np.rot90(np.asarray(Image.open(p).convert("RGB")), -1)).mean() < 1
    _, report, by, _ = case
    assert by["exif_float.jpg"].status == "assessed" and (by["exif_float.jpg"].width, by["exif_float.jpg"].height) == (h, w)


# ---------------------------------------------------------------- (2) corrupt AVIF: RuntimeError
def test_2_corrupt_avif_fails_with_its_reason(case):
    c, report, by, _ = case
    with pytest.raises(ImageLoadError, match="corrupt.avif.*RuntimeError"):
        load_image(c / "corrupt.avif")
    p = by["corrupt.avif"]
    assert p.status == "failed" and "RuntimeError" in p.reason
    assert report.summary.assessed >= 3  # the case went on


# ---------------------------------------------------------------- (3) file name that is not UTF-8
def test_3_non_utf8_name_kept_losslessly_and_written_safely(case):
    c, report, _, paths = case
    raw = paths["json"].read_bytes()
    raw.decode("utf-8")  # strict: the report is valid UTF-8
    data = json.loads(raw)
    entry = next(p for p in data["photos"] if p.get("path_bytes"))
    assert entry["path"].endswith("dent \\xff\\xfe photo.jpg") and entry["status"] == "assessed"
    assert base64.b64decode(entry["path_bytes"]) == os.fsencode(str(c / NON_UTF8))  # the exact bytes
    assert all(p["path_bytes"] is None for p in data["photos"] if p is not entry)
    html = paths["html"].read_bytes().decode("utf-8")
    assert "dent \\xff\\xfe photo.jpg" in html


# ---------------------------------------------------------------- (4) --out names a file
def test_4_out_checked_before_any_model_loads(tmp_path, monkeypatch):
    import carcheck.pipeline.assess as pa

    def no_models(*a, **k):
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr(pa, "Assessor", no_models)
    photo = _photos(1)[0]
    f = tmp_path / "report.txt"
    f.write_text("x")
    r = runner.invoke(app, ["assess", str(photo), "--out", str(f)])
    assert r.exit_code == 2 and "not a folder" in r.output, r.output
    r = runner.invoke(app, ["assess", str(photo), "--out", str(f / "sub")])  # under a file: cannot be created
    assert r.exit_code == 2 and "cannot create" in r.output, r.output
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").mkdir()  # the JSON path is taken by a folder
    r = runner.invoke(app, ["assess", str(photo), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "not a file" in r.output, r.output


# ---------------------------------------------------------------- (5) special entries in a folder
def test_5_every_entry_of_a_folder_is_in_the_report(case):
    c, report, by, _ = case
    listed = {e for e in os.listdir(c)} | {"notes.jpg"}
    names = {Path(p.path).name for p in report.photos}
    assert (listed - {".DS_Store", "sub", os.path.basename(NON_UTF8)}) <= names
    assert len(report.photos) == report.summary.photos == len(listed) - 2  # all but the sub-folder and .DS_Store
    expect = {"broken_link.jpg": "broken symbolic link", "pipe.jpg": "FIFO", "sock.jpg": "socket",
              "link_to_folder": "symbolic link to a folder", "notes.jpg": "not an image"}
    for name, words in expect.items():
        assert by[name].status == "failed" and words in by[name].reason, (name, by[name].reason)
    assert [Path(f).name for f in report.ignored_files] == [".DS_Store"]


# ---------------------------------------------------------------- (6) 64 MP and 108 MP phone photos
def test_6_large_phone_photos_decoded_within_memory(tmp_path, case):
    src = Image.open(_photos(1)[0]).convert("RGB")
    p64 = tmp_path / "phone_64mp.jpg"
    src.resize((9248, 6936), Image.Resampling.BILINEAR).save(p64, quality=90)  # 64.1 MP > the old 64,000,000 limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning (89 MP) no longer refuses a 108 MP photo
        d = decode_image(p64, max_decoded_pixels=16_000_000)
        d108 = decode_image(case[0] / "phone_108mp.jpg", max_decoded_pixels=16_000_000)
    assert (d.width, d.height) == (9248, 6936) and d.reduced and d.array.shape[0] * d.array.shape[1] <= 16_000_000
    assert (d108.width, d108.height) == (12000, 9000) and d108.array.shape == (2250, 3000, 3)  # DCT scale 1/4
    assert load_image(p64).shape == (6936, 9248, 3)  # default: a 64 MP photo comes back whole
    # peak memory of decoding the 108 MP photo, in a fresh process (VmHWM: ru_maxrss would count the
    # pytest process it was forked from)
    code = ("import sys; from carcheck.data.images import load_image; load_image(sys.argv[1]); "
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code, str(case[0] / "phone_108mp.jpg")], capture_output=True,
                         text=True, check=True)
    assert int(out.stdout) < 600_000, out.stdout  # KiB: 1/2-scale decode (27 MP), never the 432 MB full image
    p = case[2]["phone_108mp.jpg"]
    assert p.status == "assessed" and (p.width, p.height) == (12000, 9000)
    # true bombs are still refused: a header declaring 300 MP, and 144 MP of zeros in a small PNG
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(bomb)
    hdr = bytearray(p64.read_bytes())
    i = hdr.index(b"\xff\xc0")  # SOF0: height, width at offset 5, 7
    hdr[i + 5:i + 9] = (20000).to_bytes(2, "big") + (15000).to_bytes(2, "big")
    (tmp_path / "huge_header.jpg").write_bytes(bytes(hdr))
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(tmp_path / "huge_header.jpg")


# ---------------------------------------------------------------- (7) rich markup in a path
@needs_models
def test_7_paths_with_markup_are_printed_as_written(tmp_path, monkeypatch, assessor):
    import carcheck.pipeline.assess as pa

    from carcheck.cli._common import console

    monkeypatch.setattr(pa, "Assessor", lambda *a, **k: assessor)  # the models loaded once for this module
    monkeypatch.setattr(console, "width", 400)  # no line wrapping inside the paths
    d = tmp_path / "case [" / "]"  # the path contains "[/]"
    d.mkdir(parents=True)
    (d / "[red]notes[bold].jpg").write_text("not a photo")
    (d / NON_UTF8).write_text("not a photo either")
    out = tmp_path / "out [/]"
    r = runner.invoke(app, ["assess", str(d), "--out", str(out)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 1, r.output  # files failed; not a crash
    text = " ".join(r.output.split())
    assert f"{d}/[red]notes[bold].jpg" in text and "\\xff\\xfe" in text and str(out) in text
    assert (out / "report.json").is_file()


# ---------------------------------------------------------------- (8) the same photo three times
@needs_models
def test_8_duplicates_count_once(tmp_path, assessor):
    a, b = _photos(2)
    copy = tmp_path / "reencoded.jpg"
    Image.open(a).save(copy, "JPEG", quality=60)
    once, _ = assessor.assess([a, b], case_id="once")
    thrice, _ = assessor.assess([a, a, copy, a, b], case_id="thrice")
    st = [(p.status, p.reason) for p in thrice.photos]
    assert st[0][0] == "assessed" and st[4][0] == "assessed"
    assert st[1] == ("skipped", f"duplicate of {a}") and st[3] == ("skipped", f"duplicate of {a}")
    assert st[2][0] == "skipped" and st[2][1].startswith(f"near duplicate of {a}")
    assert [(f.part, f.damage, f.k_agree) for f in thrice.findings] == [(f.part, f.damage, f.k_agree) for f in once.findings]
    if not assessor.heads.has("verification"):
        pytest.skip("shipped verification model missing: no same-vehicle check to compare")
    # the same-vehicle check saw each photo once
    assert thrice.consistency.checked_photos == once.consistency.checked_photos == 2
    assert thrice.consistency.different_vehicle == once.consistency.different_vehicle


# ---------------------------------------------------------------- (9) blank and tiny images
def test_9_blank_and_tiny_images_skipped_before_the_models(tmp_path, case, assessor, monkeypatch):
    _, _, by, _ = case
    for name in ("black16.png", "nan.tif", "transparent.png"):
        assert by[name].status == "skipped" and "blank" in by[name].reason and not by[name].detections, name
    assert by["thumb32.jpg"].status == "skipped" and "too small" in by["thumb32.jpg"].reason
    _blank_images(tmp_path, _photos(1)[0])

    def no_models(*a, **k):
        raise AssertionError("the models ran")

    monkeypatch.setattr(assessor, "predict", no_models)
    for name in ("black16.png", "nan.tif", "transparent.png", "thumb32.jpg"):
        rep, fnd, _ = assessor.screen_photo(tmp_path / name)
        assert rep.status == "skipped" and fnd is None, (name, rep.reason)


# ---------------------------------------------------------------- failure boundary and exit codes
def test_a_crash_inside_a_photo_fails_only_that_photo(tmp_path, assessor, monkeypatch):
    real = _photos(1)[0]

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(assessor, "predict", boom)
    report, _ = assessor.assess([real, tmp_path / "missing.jpg"], case_id="boom")
    assert [p.status for p in report.photos] == ["failed", "failed"]
    assert "RuntimeError: kaboom" in report.photos[0].reason and report.photos[1].reason == "file not found"


def test_an_unexpected_exception_exits_3_not_1(monkeypatch, capsys):
    import carcheck.data.check as check
    from carcheck.cli import INTERNAL_ERROR, main

    def bug(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(check, "check_dataset", bug)
    monkeypatch.setattr(sys, "argv", ["carcheck", "dataset", "check", "."])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == INTERNAL_ERROR == 3
    assert "internal error" in capsys.readouterr().err


# ---------------------------------------------------------------- peak memory: large decodes never overlap the networks
def test_decode_buffer_bytes_from_the_header(tmp_path):
    from carcheck.data.image_header import decode_buffer_bytes

    Image.new("RGB", (1000, 500)).save(tmp_path / "a.png")
    Image.new("L", (1000, 500)).save(tmp_path / "g.png")
    Image.new("RGB", (4000, 3000)).save(tmp_path / "big.jpg", quality=80)
    assert decode_buffer_bytes(tmp_path / "a.png") == 1000 * 500 * 4  # Pillow holds RGB as 4 bytes/px
    assert decode_buffer_bytes(tmp_path / "g.png") == 1000 * 500
    # a JPEG is decoded at DCT scale 1/4 for a 1 MP target: 1000 x 750 px
    assert decode_buffer_bytes(tmp_path / "big.jpg", max_decoded_pixels=1_000_000) == 1000 * 750 * 4
    assert decode_buffer_bytes(tmp_path / "big.jpg", max_decoded_pixels=None) == 4000 * 3000 * 4
    (tmp_path / "text.jpg").write_text("not an image")
    os.mkfifo(tmp_path / "pipe.png")
    for bad in ("text.jpg", "pipe.png", "missing.png"):  # decode_image says why; the estimate never raises
        assert decode_buffer_bytes(tmp_path / bad) == 0


@needs_models
def test_large_decodes_wait_for_the_previous_photo(tmp_path, assessor, monkeypatch):
    """A photo whose decode buffer exceeds PREFETCH_MAX_BYTES is read on the main thread, after the
    previous photo has been through the networks; small ones are decoded ahead in the thread."""
    import threading

    import carcheck.pipeline.assess as assess_mod

    real = _photos(1)[0]
    Image.open(real).convert("RGB").resize((900, 600)).save(tmp_path / "small.jpg")
    Image.open(real).convert("RGB").resize((1600, 1200)).save(tmp_path / "large.png")
    events, orig_read, orig_screen = [], assessor.read_photo, assessor.screen_photo
    monkeypatch.setattr(assess_mod, "PREFETCH_MAX_BYTES", 4 * 2 ** 20)  # between the two files' buffers

    def read(path):
        events.append(("read", Path(path).name, threading.current_thread().name.startswith("carcheck-decode")))
        return orig_read(path)

    def screen(path, loaded=None):
        events.append(("screen", Path(path).name, None))
        return orig_screen(path, loaded)

    monkeypatch.setattr(assessor, "read_photo", read)
    monkeypatch.setattr(assessor, "screen_photo", screen)
    report, _ = assessor.assess([tmp_path / "small.jpg", tmp_path / "large.png"], case_id="prefetch")
    assert [p.status for p in report.photos] == ["assessed", "assessed"]
    reads = {name: in_thread for kind, name, in_thread in events if kind == "read"}
    assert reads == {"small.jpg": True, "large.png": False}
    assert events.index(("screen", "small.jpg", None)) < events.index(("read", "large.png", False))
