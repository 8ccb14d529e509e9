import io

import numpy as np
import pytest
from PIL import Image

from carcheck.data.image_header import image_size
from carcheck.data.images import ImageLoadError, load_image


def _save(tmp_path, name, img, **kw):
    p = tmp_path / name
    img.save(p, **kw)
    return p


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1"])
def test_any_mode_becomes_rgb_uint8(tmp_path, mode):
    img = Image.new("RGB", (20, 10), (200, 30, 40)).convert(mode) if mode not in ("I;16", "I", "F") else \
        Image.fromarray((np.arange(200).reshape(10, 20) * 300).astype(np.uint16 if mode == "I;16" else np.int32 if mode == "I" else np.float32))
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I", "F") else "PNG"
    p = _save(tmp_path, f"x.{fmt.lower()}", img, format=fmt)
    arr = load_image(p)
    assert arr.shape == (10, 20, 3) and arr.dtype == np.uint8


def test_rgba_transparency_composited_on_white(tmp_path):
    p = _save(tmp_path, "t.png", Image.new("RGBA", (4, 4), (255, 0, 0, 0)))
    assert load_image(p)[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = _save(tmp_path, "r.jpg", img, exif=exif.tobytes(), quality=95)
    arr = load_image(p)
    assert arr.shape[:2] == (40, 20)  # upright: portrait
    assert arr[:10, :, 0].mean() > 200  # the left stripe is now at the top
    assert image_size(p) == (20, 40)


def test_truncated_jpeg_names_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg") as e:
        load_image(p)
    assert "truncated" in e.value.reason or "corrupt" in e.value.reason


def test_text_file_renamed_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("hello, not an image")
    with pytest.raises(ImageLoadError, match="notes.jpg.*not an image"):
        load_image(p)


def test_empty_missing_and_tiny(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.png")
    p = _save(tmp_path, "one.png", Image.new("RGB", (1, 1)))
    assert load_image(p).shape == (1, 1, 3)
    with pytest.raises(ImageLoadError, match="too small"):
        load_image(p, min_side=32)


def test_pixel_limit_guards_decompression_bombs(tmp_path):
    p = _save(tmp_path, "big.png", Image.new("L", (3000, 3000)))
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(p, max_pixels=1_000_000)
