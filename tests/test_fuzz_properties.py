"""Property tests (Hypothesis, bounded and fast) of the two readers of untrusted files: the image
loader and the COCO annotation reader. bench/accuracy/fuzz.py runs the large corpus; these keep the promise
in the test suite: whatever the bytes, the loader returns an upright RGB array or raises
ImageLoadError, the COCO reader returns problems or raises CocoFormatError, nothing else."""

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from carcheck.data.check import check_dataset
from carcheck.data.coco import CocoSource
from carcheck.data.coco_schema import CocoFormatError, coco_schema_problems
from carcheck.data.folder import FolderFormatError
from carcheck.data.images import ImageLoadError, load_image
from carcheck.data.labels import read_label_csv

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed_files() -> dict[str, bytes]:
    """Small valid files of several formats (a gradient photo-like image), the mutation seeds."""
    rng = np.random.default_rng(0)
    arr = (np.linspace(0, 255, 48 * 64).reshape(48, 64, 1) * np.ones((1, 1, 3)) + rng.integers(0, 30, (48, 64, 3)))
    im = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    out = {}
    for fmt, kw in (("JPEG", {"quality": 80}), ("PNG", {}), ("WEBP", {}), ("TIFF", {}), ("GIF", {}), ("BMP", {}),
                    ("AVIF", {})):  # a mutated AVIF makes Pillow raise RuntimeError
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        out[fmt] = b.getvalue()
    return out


SEEDS = _seed_files()


@st.composite
def mutated_image(draw):
    """A seed file with bytes flipped, cut, repeated or inserted."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "set"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            data = data[:i]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif data:
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
    return bytes(data)


def _check_load(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{suffix}"
        p.write_bytes(data)
        try:
            arr = load_image(p)
        except ImageLoadError as e:
            assert e.reason and e.path.endswith(p.name)
            return
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 1


@SETTINGS
@given(mutated_image(), st.sampled_from([".jpg", ".png", ".bin"]))
def test_loader_never_raises_anything_but_image_load_error(data, suffix):
    _check_load(data, suffix)


@pytest.mark.parametrize("fmt", sorted(SEEDS))
@settings(max_examples=30, deadline=None, derandomize=True)
@given(flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 7)), min_size=1, max_size=4))
def test_loader_on_bit_flips_of_each_format(fmt, flips):
    data = bytearray(SEEDS[fmt])
    for i, bit in flips:
        data[i % len(data)] ^= 1 << bit
    _check_load(bytes(data), ".img")


@SETTINGS
@given(st.binary(max_size=4096))
def test_loader_on_arbitrary_bytes(data):
    _check_load(data, ".jpg")


# ---------------------------------------------------------------- COCO
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                       st.text(max_size=8))
_json = st.recursive(_json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                     max_leaves=12)


def _maybe(value_strategy):
    """Mostly a plausible value, sometimes any JSON value, sometimes the key is left out."""
    return st.one_of(value_strategy, value_strategy, _json, st.just(KeyError))


_images = st.lists(st.fixed_dictionaries({"id": _maybe(st.integers(0, 3)), "file_name": _maybe(st.sampled_from(["a.jpg", "b.png", ""])),
                                          "width": _maybe(st.integers(1, 64)), "height": _maybe(st.integers(1, 64))}),
                   max_size=4)
_polygon = st.lists(st.integers(0, 64), min_size=0, max_size=10)
_annotations = st.lists(st.fixed_dictionaries({
    "id": _maybe(st.integers(0, 5)), "image_id": _maybe(st.integers(0, 3)), "category_id": _maybe(st.integers(0, 2)),
    "segmentation": _maybe(st.one_of(st.lists(_polygon, max_size=2),
                                     st.fixed_dictionaries({"counts": st.one_of(st.lists(st.integers(0, 50), max_size=6), st.text(max_size=6)),
                                                            "size": st.lists(st.integers(0, 64), max_size=3)}))),
    "bbox": _maybe(st.lists(st.floats(-5, 70, allow_nan=False), min_size=4, max_size=4)),
    "iscrowd": _maybe(st.sampled_from([0, 1]))}), max_size=5)
_categories = st.lists(st.fixed_dictionaries({"id": _maybe(st.integers(0, 2)), "name": _maybe(st.sampled_from(["dent", "door"]))}),
                       max_size=3)


def _drop_missing(x):
    if isinstance(x, dict):
        return {k: _drop_missing(v) for k, v in x.items() if v is not KeyError}
    if isinstance(x, list):
        return [_drop_missing(v) for v in x]
    return x


@SETTINGS
@given(st.fixed_dictionaries({"images": _maybe(_images), "annotations": _maybe(_annotations),
                              "categories": _maybe(_categories)}))
def test_coco_reader_reports_problems_and_never_crashes(doc):
    doc = _drop_missing(doc)
    problems = coco_schema_problems(doc)
    assert all(isinstance(p, str) and isinstance(m, str) and m for p, m in problems)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "set"
        root.mkdir()
        Image.new("RGB", (64, 48), (90, 120, 200)).save(root / "a.jpg")
        f = root / "instances_x.json"
        f.write_text(json.dumps(doc))
        complete = all(k in doc for k in ("images", "annotations", "categories"))
        try:
            CocoSource(f)
            assert complete and not problems
        except CocoFormatError as e:  # the only exception the reader raises
            assert not complete or e.problems == problems != []
        report = check_dataset(root, duplicates=False)  # problems, never an exception
        if not complete or problems:
            assert report.errors
        if complete and problems:
            assert "schema" in {p.code for p in report.errors}


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list('ab,"\n\r x.jpg') + ["\0", "é"]), max_size=200))
def test_label_csv_reader_raises_only_folder_format_error(text):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "labels.csv"
        f.write_text("file,label,split\n" + text, encoding="utf-8")
        try:
            rows = read_label_csv(f)
        except FolderFormatError as e:
            assert "labels.csv" in str(e)
            return
        assert rows and all(r.label for r in rows)


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_every_seed_loads(fmt):
    _check_load(SEEDS[fmt], ".img")
