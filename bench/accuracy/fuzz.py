"""Robustness benchmark (issue 20): no file can abort a case or a command.

Builds a seeded corpus of 1,000+ bad or odd files from the real photos in ../shared/data
(truncated, bit-flipped, renamed non-images, every colour mode x format Pillow writes, EXIF edge
cases, decompression bombs, tiny / huge / extreme-aspect images, blank images, odd file names,
filesystem oddities, duplicates) plus unmodified real photos and real photos upscaled to 64, 108
and 200 MP, then runs, each in its own subprocess with a timeout (hang detection) and its peak RSS
(VmHWM, written by the child itself at exit: ru_maxrss would count the parent it was forked from):

1. ``carcheck assess`` on the whole corpus as one case (a folder);
2. ``carcheck assess`` on 20 random mixed subsets: real photos from the shared data plus corpus files;
3. ``carcheck dataset check`` on 40+ malformed annotation files (COCO, YOLO, pairs CSV), each in its
   own dataset folder beside real photos;
4. ``carcheck evaluate classifier`` on malformed label CSVs.

Counted: files tried; crashes (a traceback, an exit code other than 0/1 for assess and dataset
check or other than 2 for a malformed label CSV, no report.json); files lost (an entry of the
folder that is neither in the report's photos, matched by exact bytes of the name, nor in its
ignored_files); hangs (timeouts); real photos failed (unmodified real photos, under any name, and
the upscaled large ones, whose status is "failed"); malformed annotation / CSV files answered
without a clear error (exit 0, or no error message naming the file); worst wall time; peak RSS.

Run: python bench/accuracy/fuzz.py  (about 15 minutes on 2 cores; prints a table, writes
bench/results/fuzz.json; the corpus and reports go to runs/fuzz/, which git ignores)
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, stopwatch, write_results  # noqa: E402,F401

import numpy as np
from PIL import Image

REPO = ROOT
TARGETS = {"crashes": 0, "files_lost": 0, "hangs": 0, "real_photos_failed": 0, "peak_rss_mb": 1536, "peak_rss_mb_small_cases": 1536,
           "malformed_without_clear_error": 0}

# a child process: run the carcheck CLI, write its own peak RSS (VmHWM, kB) to $FUZZ_RSS at exit
_CHILD = r"""
import atexit, os, sys
def _rss():
    try:
        with open("/proc/self/status") as f:
            kb = next(l.split()[1] for l in f if l.startswith("VmHWM"))
        with open(os.environ["FUZZ_RSS"], "w") as f:
            f.write(kb)
    except Exception:
        pass
atexit.register(_rss)
sys.argv = ["carcheck"] + sys.argv[1:]
from carcheck.cli import main
main()
"""


# ====================================================================== corpus
class Corpus:
    """Writes files under ``root`` and remembers, per exact name (bytes), its kind and whether it
    is a real photo (unmodified content, or a real photo upscaled)."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.manifest: dict[bytes, dict] = {}

    def path(self, kind: str, name: str | bytes) -> Path:
        d = self.root / kind
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        return d / name

    def note(self, p: Path, kind: str, real: bool = False, expect: str | None = None) -> Path:
        self.manifest[os.fsencode(str(p))] = {"kind": kind, "real": real, "expect": expect}
        return p

    def write(self, kind: str, name: str | bytes, data: bytes, real: bool = False, expect: str | None = None) -> Path:
        p = self.path(kind, name)
        p.write_bytes(data)
        return self.note(p, kind, real, expect)

    def save(self, kind: str, name: str | bytes, im: Image.Image, fmt: str | None = None, real: bool = False,
             expect: str | None = None, **kw) -> Path | None:
        p = self.path(kind, name)
        try:
            im.save(p, fmt, **kw)
        except Exception:  # this mode / format pair cannot be written: nothing to test
            if p.exists():
                p.unlink()
            return None
        return self.note(p, kind, real, expect)


def real_photos(n: int, rng: random.Random, exclude: set[Path] = frozenset()) -> list[Path]:
    """``n`` real car photos from several shared sets (seeded)."""
    pools = [DATA / "car_parts" / "testset" / "JPEGImages", DATA / "car_damage" / "coco_car_damage_lplenka" / "val",
             DATA / "car_damage" / "lensor_severity" / "images" / "test", DATA / "cases" / "salvage_panamera_167111",
             DATA / "car_state" / "vds_damage_severity" / "severe", DATA / "car_models" / "stanford_cars_subset32"]
    files = sorted(p for d in pools if d.is_dir() for p in d.rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p not in exclude)
    if len(files) < n:
        sys.exit(f"fuzz: need {n} real photos under {DATA}, found {len(files)} (set CARCHECK_DATA)")
    return rng.sample(files, n)


def _encodings(im: Image.Image) -> dict[str, bytes]:
    """One photo in every format with a writer that handles RGB (the bases of the mutations)."""
    out = {}
    for fmt, ext, kw in (("JPEG", "jpg", {"quality": 88}), ("PNG", "png", {}), ("WEBP", "webp", {"quality": 80}),
                         ("AVIF", "avif", {"quality": 60}), ("TIFF", "tif", {}), ("GIF", "gif", {}), ("BMP", "bmp", {}),
                         ("JPEG2000", "jp2", {})):
        b = io.BytesIO()
        try:
            im.save(b, fmt, **kw)
        except Exception:
            continue
        out[ext] = b.getvalue()
    return out


def _exif(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0, prefix: bytes = b"II*\x00") -> bytes:
    """An EXIF block with hand-made IFD0 entries ``(tag, type, count, 4 value bytes)``."""
    b = prefix + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, typ, cnt, val in entries:
        b += struct.pack("<HHI", tag, typ, cnt) + val
    return b"Exif\x00\x00" + b + struct.pack("<I", next_ifd)


def build_corpus(root: Path, seed: int) -> Corpus:
    if root.exists():
        for p in sorted(root.rglob("*"), reverse=True):  # undo chmod 000 before removing
            try:
                if p.is_dir() and not p.is_symlink():
                    os.chmod(p, 0o755)
            except OSError:
                pass
        shutil.rmtree(root)
    c = Corpus(root, seed)
    rng = c.rng
    real = real_photos(48, rng)
    small = [Image.open(p).convert("RGB") for p in real[:8]]
    for im in small:
        im.thumbnail((640, 640))

    # --- real photos, unmodified (the case's ordinary photos; sorted first: 00_)
    for i, p in enumerate(real[:40]):
        shutil.copy(p, c.note(c.path("00_real", f"{i:02d}_{p.parent.name}_{p.name}"), "real", real=True))
    # --- real photos upscaled to phone sizes (JPEG, as phones write them)
    big_src = Image.open(real[40]).convert("RGB")
    for j, (name, size) in enumerate((("64mp", (9248, 6936)), ("108mp", (12000, 9000)), ("200mp", (16320, 12240)))):
        big = Image.open(real[42 + j]).convert("RGB").resize(size, Image.Resampling.BILINEAR)  # 3 different photos
        c.save("01_real_large", f"phone_{name}.jpg", big, "JPEG", real=True, quality=90)
        del big
    big = Image.open(real[41]).convert("RGB").resize((8000, 6000), Image.Resampling.BILINEAR)
    c.save("01_real_large", "export_48mp.png", big, "PNG", real=True, compress_level=1)
    del big

    bases = {}
    for i, im in enumerate(small[:6]):
        for ext, data in _encodings(im).items():
            bases[f"{i}.{ext}"] = data
            c.write("02_formats", f"base{i}.{ext}", data)  # mostly near duplicates of 00_real photos
    names = sorted(bases)

    # --- truncated
    for k in range(200):
        n = names[k % len(names)]
        data = bases[n]
        cut = rng.choice([0, 1, 2, 8, 16, 64, 200, len(data) // 4, len(data) // 2, len(data) - 1,
                          rng.randrange(1, len(data))])
        c.write("10_truncated", f"t{k:03d}_{cut}_{n}", data[:cut])
    # --- bit-flipped (half of them in the header)
    for k in range(350):
        n = names[(k * 7) % len(names)]
        data = bytearray(bases[n])
        for _ in range(rng.choice([1, 1, 2, 4, 8, 20])):
            i = rng.randrange(min(len(data), 256)) if k % 2 else rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        c.write("11_bitflip", f"f{k:03d}_{n}", bytes(data))
    # --- renamed non-images
    payloads = {
        "text": b"This is a claim note, not a photo.\n" * 20, "empty_line": b"\n", "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
        "zip": b"PK\x03\x04" + bytes(60), "html": b"<html><script>alert(1)</script></html>", "json": b'{"photo": true}',
        "elf": b"\x7fELF\x02\x01\x01" + bytes(120), "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>',
        "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n", "sh": b"#!/bin/sh\nrm -rf /\n",
        "xml_bomb": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><l>&b;</l>',
        "heic_like": b"\x00\x00\x00\x18ftypheic" + bytes(100), "mp4_like": b"\x00\x00\x00\x18ftypmp42" + bytes(100),
        "nul": bytes(4096),
    }
    exts = [".jpg", ".png", ".jpeg", ".webp", ".tif", ".bmp", ".gif", ".avif", ""]
    k = 0
    for name, data in payloads.items():
        for ext in exts[: 4 if name not in ("text", "pdf", "nul") else len(exts)]:
            c.write("12_nonimage", f"n{k:02d}_{name}{ext}", data)
            k += 1
    for j in range(10):
        c.write("12_nonimage", f"random{j}.jpg", c.np.integers(0, 256, rng.randrange(10, 20000), dtype=np.uint8).tobytes())
    # --- every colour mode x format Pillow writes
    im = small[6]
    arr16 = (np.asarray(im.convert("L"), dtype=np.uint16) * 257)
    mode_images = {}
    for m in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa", "I", "F",
              "I;16", "I;16B"):
        try:
            mode_images[m] = Image.fromarray(arr16).convert(m) if m.startswith("I;16") else im.convert(m)
        except Exception:  # Pillow cannot make this mode from RGB: nothing to write
            continue
    formats = [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif"), ("TIFF", "tif"), ("WEBP", "webp"),
               ("AVIF", "avif"), ("JPEG2000", "jp2"), ("ICO", "ico"), ("PPM", "ppm"), ("PCX", "pcx"), ("TGA", "tga"),
               ("SGI", "sgi"), ("DDS", "dds"), ("QOI", "qoi"), ("IM", "im"), ("SPIDER", "spi"), ("MSP", "msp"),
               ("XBM", "xbm"), ("PALM", "palm"), ("BLP", "blp"), ("ICNS", "icns"), ("MPO", "mpo"), ("DIB", "dib")]
    for m, mi in mode_images.items():
        if mi is None:
            continue
        for fmt, ext in formats:
            c.save("13_modes", f"{m.replace(';', '_')}.{fmt}.{ext}", mi, fmt)
    # --- EXIF edge cases
    base = small[7]
    for o in range(0, 10):
        c.save("14_exif", f"orientation_{o}.jpg", base, "JPEG", exif=_exif([(0x0112, 3, 1, struct.pack("<HH", o, 0))]))
    odd = {
        "orient_65535": [(0x0112, 3, 1, struct.pack("<HH", 65535, 0))],
        "orient_as_long": [(0x0112, 4, 1, struct.pack("<I", 6))],
        "orient_as_ascii": [(0x0112, 2, 2, b"6\x00\x00\x00")],
        "orient_as_float": [(0x0112, 11, 1, struct.pack("<f", 6.0))],
        "orient_as_rational": [(0x0112, 5, 1, struct.pack("<I", 200))],
        "orient_count_3": [(0x0112, 3, 3, struct.pack("<I", 200))],
        "float_resolution_unit": [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x0128, 11, 1, struct.pack("<f", 2.5))],
        "float_width_tag": [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x0100, 11, 1, struct.pack("<f", 1.5))],
        "float_software": [(0x0112, 3, 1, struct.pack("<HH", 8, 0)), (0x0131, 11, 1, struct.pack("<f", 3.25))],
        "double_ycbcr": [(0x0112, 3, 1, struct.pack("<HH", 3, 0)), (0x0213, 12, 1, struct.pack("<I", 200))],
        "offset_past_end": [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x010F, 2, 4000, struct.pack("<I", 10 ** 8))],
        "huge_count": [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x9286, 7, 0x7FFFFFFF, struct.pack("<I", 60))],
        "exif_ifd_loop": [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x8769, 4, 1, struct.pack("<I", 8))],
        "gps_ifd_garbage": [(0x0112, 3, 1, struct.pack("<HH", 5, 0)), (0x8825, 4, 1, struct.pack("<I", 3))],
        "unknown_type": [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x0128, 99, 1, struct.pack("<I", 1))],
        "zero_entries": [],
    }
    for name, entries in odd.items():
        c.save("14_exif", f"{name}.jpg", base, "JPEG", exif=_exif(entries))
    c.save("14_exif", "ifd_next_loop.jpg", base, "JPEG", exif=_exif([(0x0112, 3, 1, struct.pack("<HH", 6, 0))], next_ifd=8))
    c.save("14_exif", "big_endian.jpg", base, "JPEG",
           exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00")
    c.save("14_exif", "bad_byte_order.jpg", base, "JPEG", exif=_exif([(0x0112, 3, 1, struct.pack("<HH", 6, 0))],
                                                                      prefix=b"XX*\x00"))
    c.save("14_exif", "truncated_exif.jpg", base, "JPEG", exif=_exif([(0x0112, 3, 1, struct.pack("<HH", 6, 0))])[:14])
    c.save("14_exif", "exif_not_exif.jpg", base, "JPEG", exif=b"not exif at all")
    c.save("14_exif", "orientation6.png", base, "PNG", exif=_exif([(0x0112, 3, 1, struct.pack("<HH", 6, 0))]))
    c.save("14_exif", "orientation8.webp", base, "WEBP", exif=_exif([(0x0112, 3, 1, struct.pack("<HH", 8, 0))]))
    c.save("14_exif", "orientation6_float.tif", base, "TIFF", exif=_exif([(0x0112, 3, 1, struct.pack("<HH", 6, 0)),
                                                                          (0x0128, 11, 1, struct.pack("<f", 2.5))]))
    # --- decompression bombs and headers declaring absurd sizes
    def png_bomb(w: int, h: int, mode_byte: int = 0, depth: int = 1) -> bytes:
        import zlib

        def chunk(t: bytes, d: bytes) -> bytes:
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
        row = bytes(1 + (w * depth + 7) // 8)
        z = zlib.compressobj(9)
        body = b"".join(z.compress(row) for _ in range(min(h, 2000))) + z.flush()  # stream ends early: truncated
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, mode_byte, 0, 0, 0))
                + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    for w, h in ((20000, 20000), (100000, 100000), (65535, 65535), (15000, 15000), (2 ** 31 - 1, 1), (1, 2 ** 31 - 1),
                 (12000, 12000), (50000, 3000)):
        c.write("15_bomb", f"png_{w}x{h}.png", png_bomb(w, h))
    Image.new("1", (12000, 12000)).save(c.note(c.path("15_bomb", "png_zeros_144mp.png"), "bomb"))
    Image.new("L", (9000, 9000)).save(c.note(c.path("15_bomb", "png_zeros_81mp_L.png"), "bomb"))
    Image.new("RGB", (8000, 8000)).save(c.note(c.path("15_bomb", "png_zeros_64mp_rgb.png"), "bomb"))
    Image.new("L", (14000, 14000)).save(c.note(c.path("15_bomb", "tiff_196mp.tif"), "bomb"), compression="tiff_deflate")
    Image.new("L", (16000, 16000)).save(c.note(c.path("15_bomb", "jpeg_grey_256mp.jpg"), "bomb"), quality=20)
    jpg = bytearray(bases["0.jpg"])
    i = jpg.index(b"\xff\xc0")
    for w, h in ((65535, 65535), (30000, 20000), (0, 0), (1, 65535)):
        jpg[i + 5:i + 9] = struct.pack(">HH", h, w)
        c.write("15_bomb", f"jpeg_header_{w}x{h}.jpg", bytes(jpg))
    gif = bytearray(bases["0.gif"])
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    c.write("15_bomb", "gif_screen_65535.gif", bytes(gif))
    bmp = bytearray(bases["0.bmp"])
    bmp[18:26] = struct.pack("<ii", 100000, -100000)
    c.write("15_bomb", "bmp_header_huge.bmp", bytes(bmp))
    # --- tiny, huge, extreme aspect
    for w, h in ((1, 1), (2, 2), (1, 10000), (10000, 1), (16, 16), (63, 500), (64, 64), (100, 8000), (8000, 100),
                 (40, 4000), (5000, 60), (3, 3000)):
        c.save("16_tiny_huge", f"{w}x{h}.png", big_src.resize((w, h)), "PNG")
    for s in (32, 48, 63):
        c.save("16_tiny_huge", f"thumb{s}.jpg", small[0].resize((s, s)), "JPEG")
    # --- blank / near-constant
    blanks = {
        "black16.png": Image.fromarray(np.zeros((480, 640), np.uint16)),
        "white16.png": Image.fromarray(np.full((480, 640), 65535, np.uint16)),
        "nan.tif": Image.fromarray(np.full((480, 640), np.nan, np.float32)),
        "inf.tif": Image.fromarray(np.full((480, 640), np.inf, np.float32)),
        "nan_and_one.tif": Image.fromarray(np.where(np.arange(640) % 2, np.nan, 1.0).astype(np.float32)[None].repeat(480, 0)),
        "transparent.png": Image.new("RGBA", (640, 480), (0, 0, 0, 0)),
        "transparent.webp": Image.new("RGBA", (640, 480), (10, 200, 30, 0)),
        "black.jpg": Image.new("RGB", (640, 480)),
        "white.jpg": Image.new("RGB", (640, 480), (255, 255, 255)),
        "grey.png": Image.new("L", (640, 480), 128),
        "red.png": Image.new("RGB", (640, 480), (255, 0, 0)),
        "noise_pm1.png": Image.fromarray((128 + c.np.integers(-1, 2, (480, 640))).astype(np.uint8)),
        "black_1bit.png": Image.new("1", (640, 480)),
        "palette_one_colour.gif": Image.new("P", (640, 480), 3),
        "lens_cap.jpg": Image.fromarray(c.np.integers(0, 4, (480, 640, 3)).astype(np.uint8)),
    }
    for name, bim in blanks.items():
        c.save("17_blank", name, bim)
    # --- odd file names (real photos, unmodified content)
    odd_names = [b"name\xff\xfe.jpg", b"\xc3\x28 invalid.jpg", b"latin1_\xe9t\xe9.jpg", "[red]markup[bold].jpg",
                 "with space.jpg", "new\nline.jpg", "tab\there.jpg", "emoji_🚗💥.jpg", "rtl_\u202egpj.exe", "-dash.jpg",
                 "--out.jpg", "%s%n%x.jpg", "quote'\"q.jpg", "<img src=x onerror=alert(1)>.jpg", "back\\slash.jpg",
                 "e\u0301_nfd.jpg", "\u00e9_nfc.jpg", "UPPER.JPG", "double.jpg.png", "no_extension", "x" * 240 + ".jpg",
                 "ends_with_dot.", "  leading_space.jpg", "semi;colon&amp.jpg", "$(reboot).jpg", "zero\u200bwidth.jpg",
                 "dollar$HOME.jpg", "ctrl\x01\x1b[31m.jpg"]
    for j, nm in enumerate(odd_names):
        shutil.copy(real[j % 40], c.note(c.path("18_names", nm), "names", real=True))
    d = c.path("18_names", "x[")  # a path containing "[/]"
    d.mkdir(exist_ok=True)
    shutil.copy(real[3], c.note(d / "]y.jpg", "names", real=True))
    shutil.copy(real[4], c.note(c.path("18_names", ".hidden.jpg"), "names_hidden"))  # ignored on purpose
    # --- filesystem oddities
    fs = c.path("19_fs", "_")
    fs.parent.mkdir(exist_ok=True)
    fsd = fs.parent
    os.symlink(fsd / "nowhere.jpg", c.note(fsd / "broken_link.jpg", "fs"))
    os.symlink(fsd / "loop_b.jpg", c.note(fsd / "loop_a.jpg", "fs"))
    os.symlink(fsd / "loop_a.jpg", c.note(fsd / "loop_b.jpg", "fs"))
    os.symlink(root, c.note(fsd / "link_to_corpus_root", "fs"))
    os.symlink("/dev/null", c.note(fsd / "link_to_dev_null.jpg", "fs"))
    os.symlink("/proc/self/status", c.note(fsd / "link_to_proc.jpg", "fs"))
    os.symlink(real[5], c.note(fsd / "link_to_real.jpg", "fs", real=True))
    os.mkfifo(c.note(fsd / "fifo.jpg", "fs"))
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(c.note(fsd / "socket.jpg", "fs")))
    s.close()
    c.write("19_fs", "empty.jpg", b"")
    p = c.write("19_fs", "unreadable.jpg", bases["0.jpg"])
    os.chmod(p, 0)
    os.link(fsd / "unreadable.jpg", c.note(fsd / "hardlink.jpg", "fs"))
    sparse = c.note(fsd / "sparse_1gb.jpg", "fs")
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)
    dj = fsd / "folder_named_photo.jpg"
    dj.mkdir()
    shutil.copy(real[6], c.note(dj / "inside.jpg", "fs", real=True))
    deep = fsd
    for lvl in range(40):
        deep = deep / f"d{lvl}"
    deep.mkdir(parents=True)
    shutil.copy(real[7], c.note(deep / "deep.jpg", "fs", real=True))
    locked = fsd / "locked_folder"
    locked.mkdir()
    shutil.copy(real[8], c.note(locked / "in_locked.jpg", "fs", real=True))
    os.chmod(locked, 0)
    (fsd / "empty_folder").mkdir()
    (fsd / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (fsd / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    # --- duplicates within the case
    for j in range(3):
        shutil.copy(real[9], c.note(c.path("20_dup", f"same_{j}.jpg"), "dup", real=True))
    for j in range(5):
        src = Image.open(real[10 + j]).convert("RGB")
        c.save("20_dup", f"reencoded_{j}.jpg", src, "JPEG", quality=55)
        c.save("20_dup", f"half_{j}.png", src.resize((src.width // 2, src.height // 2)), "PNG")
        c.save("20_dup", f"grey_{j}.jpg", src.convert("L"), "JPEG")
    return c


# ====================================================================== malformed annotations
def malformed_annotation_sets(root: Path, seed: int) -> list[tuple[str, Path]]:
    """40+ dataset folders, each with one malformed annotation file beside two real photos."""
    if root.exists():
        shutil.rmtree(root)
    src = DATA / "car_damage" / "coco_car_damage_lplenka" / "val"
    base = json.loads((src / "COCO_val_annos.json").read_text())
    base["images"] = base["images"][:2]
    keep = {i["id"] for i in base["images"]}
    base["annotations"] = [a for a in base["annotations"] if a["image_id"] in keep][:3]

    def new(name: str) -> Path:
        d = root / name
        (d / "val").mkdir(parents=True)
        for im in base["images"]:
            shutil.copy(src / im["file_name"], d / "val" / im["file_name"])
        return d

    edits = {
        "null_images": lambda d: d.update(images=None), "images_object": lambda d: d.update(images={}),
        "annotations_string": lambda d: d.update(annotations="none"), "categories_null": lambda d: d.update(categories=None),
        "string_image_id": lambda d: d["images"][0].update(id="0"), "float_image_id": lambda d: d["images"][0].update(id=0.5),
        "null_image_id": lambda d: d["images"][0].update(id=None), "string_ann_id": lambda d: d["annotations"][0].update(id="x"),
        "string_ann_image_id": lambda d: d["annotations"][0].update(image_id="0"),
        "string_category_id": lambda d: d["annotations"][0].update(category_id="1"),
        "bool_category_id": lambda d: d["annotations"][0].update(category_id=True),
        "image_entry_number": lambda d: d["images"].__setitem__(0, 7), "ann_entry_null": lambda d: d["annotations"].__setitem__(0, None),
        "category_entry_string": lambda d: d["categories"].__setitem__(0, "damage"),
        "null_file_name": lambda d: d["images"][0].update(file_name=None), "int_file_name": lambda d: d["images"][0].update(file_name=1),
        "missing_file_name": lambda d: d["images"][0].pop("file_name"), "nul_in_file_name": lambda d: d["images"][0].update(file_name="a\0.jpg"),
        "empty_file_name": lambda d: d["images"][0].update(file_name=""), "float_width": lambda d: d["images"][0].update(width=1024.5),
        "string_height": lambda d: d["images"][0].update(height="1024"), "zero_width": lambda d: d["images"][0].update(width=0),
        "negative_height": lambda d: d["images"][0].update(height=-5), "name_number": lambda d: d["categories"][0].update(name=5),
        "name_null": lambda d: d["categories"][0].update(name=None), "missing_category_id": lambda d: d["categories"][0].pop("id"),
        "bbox_three": lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "bbox_string": lambda d: d["annotations"][0].update(bbox="1,2,3,4"),
        "bbox_nan": lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]),
        "bbox_inf": lambda d: d["annotations"][0].update(bbox=[1, 2, float("inf"), 4]),
        "bbox_negative": lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]),
        "area_string": lambda d: d["annotations"][0].update(area="big"),
        "segmentation_string": lambda d: d["annotations"][0].update(segmentation="abc"),
        "segmentation_number": lambda d: d["annotations"][0].update(segmentation=5),
        "polygon_text": lambda d: d["annotations"][0].update(segmentation=[[1, 2, "x", 4, 5, 6]]),
        "polygon_not_list": lambda d: d["annotations"][0].update(segmentation=[5, 6]),
        "polygon_nested_deeper": lambda d: d["annotations"][0].update(segmentation=[[[1, 2], [3, 4]]]),
        "rle_bad_size": lambda d: d["annotations"][0].update(segmentation={"counts": "ab", "size": [3]}),
        "rle_negative_counts": lambda d: d["annotations"][0].update(segmentation={"counts": [-1, 5], "size": [4, 4]}),
        "rle_counts_null": lambda d: d["annotations"][0].update(segmentation={"counts": None, "size": [4, 4]}),
        "iscrowd_string": lambda d: d["annotations"][0].update(iscrowd="no"), "iscrowd_two": lambda d: d["annotations"][0].update(iscrowd=2),
        "duplicate_image_id": lambda d: d["images"][1].update(id=d["images"][0]["id"]),
        "duplicate_ann_id": lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]),
        "huge_int_id": lambda d: d["images"][0].update(id=10 ** 40),
    }
    out = []
    for name, edit in edits.items():
        d = json.loads(json.dumps(base))
        edit(d)
        folder = new(f"coco_{name}")
        (folder / "val" / "instances_val.json").write_text(json.dumps(d))
        out.append((f"coco_{name}", folder))
    raw = {
        "deep_nesting": b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b', "annotations": [], "categories": []}',
        "deep_object_nesting": b'{"annotations": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b', "images": [], "categories": []}',
        "not_utf8": b'{"images": [], "annotations": [{"id": 1, "name": "\xff\xfe"}], "categories": []}',
        "utf16": '{"images": [], "annotations": [], "categories": []}'.encode("utf-16"),
        "truncated": json.dumps(base).encode()[:500], "top_level_list": b'["images", "annotations", "categories"]',
        "empty_object_images_word": b'{"images": 1}', "nan_literal": b'{"images": [{"id": 1, "file_name": "a.jpg", "width": NaN}], '
                                                         b'"annotations": [], "categories": []}',
        "bom_then_garbage": b"\xef\xbb\xbf" + b'{"images"' + bytes(50),
    }
    for name, data in raw.items():
        folder = new(f"coco_raw_{name}")
        (folder / "val" / "instances_val.json").write_bytes(data)
        out.append((f"coco_raw_{name}", folder))
    yolo = {
        "names_null": "names: null\ntrain: images\n", "names_mixed_keys": "names: {0: a, x: b}\ntrain: images\n",
        "names_nested": "names: [[a, b], {c: d}]\ntrain: images\n", "path_list": "names: [a]\npath: [1, 2]\n",
        "split_mapping": "names: [a]\ntrain: {images: 1}\n", "not_utf8": b"names: [\xff\xfe]\n",
        "deep_yaml": "names: " + "[" * 5000 + "]" * 5000 + "\n", "label_not_utf8": "names: [a, b]\n",
        "label_nan": "names: [a, b]\n", "label_bad_class": "names: [a, b]\n",
    }
    for name, text in yolo.items():
        folder = root / f"yolo_{name}"
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
        shutil.copy(src / base["images"][0]["file_name"], folder / "images" / "a.jpg")
        (folder / "data.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
        label = {"label_not_utf8": b"0 0.5 \xff 0.1 0.1\n", "label_nan": b"0 nan 0.5 0.1 0.1\n",
                 "label_bad_class": b"7 0.5 0.5 0.1 0.1\n"}.get(name, b"0 0.5 0.5 0.1 0.1\n")
        (folder / "labels" / "a.txt").write_bytes(label)
        out.append((f"yolo_{name}", folder))
    pairs = {"short_row": "file_a,file_b,same_vehicle\na.jpg,b.jpg\n",
             "unterminated_quote": 'file_a,file_b,same_vehicle\n"a.jpg,b.jpg,1\n',
             "bad_label": "file_a,file_b,same_vehicle\na.jpg,b.jpg,yes\n",
             "long_field": "file_a,file_b,same_vehicle\na.jpg," + "b" * 200_000 + ",1\n"}
    for name, text in pairs.items():
        folder = root / f"pairs_{name}"
        (folder / "images").mkdir(parents=True)
        shutil.copy(src / base["images"][0]["file_name"], folder / "images" / "a.jpg")
        (folder / "pairs.csv").write_text(text)
        out.append((f"pairs_{name}", folder))
    return out


def malformed_label_csvs(root: Path) -> list[tuple[str, Path]]:
    """Malformed label CSVs for ``evaluate classifier`` (each names a real photo that exists)."""
    root.mkdir(parents=True, exist_ok=True)
    photo = sorted((DATA / "car_parts" / "testset" / "JPEGImages").glob("*.jpg"))[0]
    ok = f"{photo},damaged,x,test\n"
    cases = {
        "short_row": f"file,label,source,split\n{ok}{photo}\n", "long_row": f"file,label\n{photo},dam,aged\n",
        "unterminated_quote": f'file,label\n{photo},"damaged\n{ok}', "quote_then_text": f'file,label\n{photo},"dam"aged\n',
        "over_long_field": f"file,label\n{photo}," + "x" * 200_000 + "\n", "nul_byte": f"file,label\n{photo},dam\0aged\n",
        "not_utf8": b"file,label\n" + os.fsencode(str(photo)) + b",\xff\xfe\n", "missing_label_column": f"file,labels\n{photo},damaged\n",
        "empty": "", "header_only": "file,label\n", "bad_split": f"file,label,split\n{photo},damaged,holdout\n",
        "empty_label": f"file,label\n{photo},\n", "duplicate_column": f"file,label,label\n{photo},a,b\n",
        "unknown_label": f"file,label\n{photo},purple\n", "missing_photo": "file,label\nnot_there.jpg,damaged\n",
    }
    out = []
    for name, text in cases.items():
        p = root / f"{name}.csv"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        out.append((name, p))
    return out


# ====================================================================== runs
def run_cli(args: list[str], timeout: float, log: Path) -> dict:
    """Run ``carcheck ARGS`` in a child process: exit code, wall seconds, peak RSS (MB), hang, traceback."""
    rss_file = log.with_suffix(".rss")
    env = dict(os.environ, FUZZ_RSS=str(rss_file), PYTHONUNBUFFERED="1")
    elapsed = stopwatch()
    with open(log, "wb") as out:
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, *args], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, env=env, cwd=REPO)
            code, hang = proc.returncode, False
        except subprocess.TimeoutExpired:
            code, hang = None, True
    wall = elapsed()
    text = log.read_bytes().decode("utf-8", "replace")
    rss = int(rss_file.read_text()) / 1024 if rss_file.exists() else None
    return {"args": [a if len(a) < 200 else a[:200] + "..." for a in args], "exit": code, "hang": hang,
            "wall_s": round(wall, 1), "rss_mb": None if rss is None else round(rss, 1),
            "traceback": "Traceback (most recent call last)" in text, "log": str(log)}


def corpus_entries(folder: Path) -> list[Path]:
    """Every non-folder entry under ``folder`` (links not followed): what a report must account for."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for n in filenames:
            out.append(Path(dirpath) / n)
        for n in list(dirnames):
            if os.path.islink(os.path.join(dirpath, n)):
                out.append(Path(dirpath) / n)
    return out


def _is_ignored(p: Path, folder: Path) -> bool:
    rel = p.relative_to(folder).parts
    return any(x.startswith(".") for x in rel) or p.name.lower() in ("thumbs.db", "desktop.ini", ".ds_store")


def account(report: dict, expected: list[Path], ignored_expected: list[Path]) -> dict:
    """Files lost: expected entries missing from the report (exact name bytes), ignored entries
    missing from ignored_files."""
    from carcheck.data.images import display_name

    got = Counter()
    for p in report["photos"]:
        got[base64.b64decode(p["path_bytes"]) if p.get("path_bytes") else p["path"].encode("utf-8")] += 1
    lost = [str(os.fsencode(str(p))) for p in expected if got[os.fsencode(str(p))] == 0]
    ign = set(report.get("ignored_files", []))
    lost += [str(os.fsencode(str(p))) for p in ignored_expected
             if display_name(p) not in ign and not any(display_name(p).startswith(i + "/") for i in ign)]
    return {"lost": lost, "extra": sum(got.values()) - len(expected)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "fuzz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subsets", type=int, default=20)
    ap.add_argument("--subset-real", type=int, default=3, help="real photos (from the shared data) per subset")
    ap.add_argument("--subset-bad", type=int, default=5, help="corpus files per subset")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds for the whole-corpus run")
    ap.add_argument("--subset-timeout", type=float, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "fuzz.json")
    ap.add_argument("--build-only", action="store_true", help="build the corpus and stop")
    a = ap.parse_args()
    bench_elapsed = stopwatch()
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    corpus_dir = out / "corpus"
    print(f"building the corpus under {corpus_dir} ...", flush=True)
    c = build_corpus(corpus_dir, a.seed)
    entries = corpus_entries(corpus_dir)
    ignored = [p for p in entries if _is_ignored(p, corpus_dir)]
    expected = [p for p in entries if not _is_ignored(p, corpus_dir)]
    kinds = Counter(p.relative_to(corpus_dir).parts[0] for p in entries)
    print(f"corpus: {len(entries)} entries ({len(ignored)} hidden / OS clutter) in {bench_elapsed():.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), flush=True)
    real_set = {k for k, v in c.manifest.items() if v["real"]}
    if a.build_only:
        return 0
    runs, problems = [], []
    common = ["--threads", str(a.threads)]

    def check_assess(name: str, rep_dir: Path, res: dict, exp: list[Path], ign: list[Path]) -> dict:
        rj = rep_dir / "report.json"
        res["name"] = name
        crash = res["hang"] is False and (res["exit"] not in (0, 1) or res["traceback"] or not rj.is_file()
                                          or not (rep_dir / "report.html").is_file())
        res["crash"] = bool(crash)
        if rj.is_file():
            report = json.loads(rj.read_bytes().decode("utf-8"))  # strict UTF-8: the report must be valid
            acc = account(report, exp, ign)
            res["lost"] = acc["lost"]
            statuses = Counter(p["status"] for p in report["photos"])
            res["status"] = dict(statuses)
            failed_real = []
            for p in report["photos"]:
                key = base64.b64decode(p["path_bytes"]) if p.get("path_bytes") else p["path"].encode("utf-8")
                if p["status"] == "failed" and (key in real_set or name.startswith("subset") and key in subset_real):
                    failed_real.append(f"{p['path']}: {p['reason']}")
            res["real_failed"] = failed_real
            secs = [p["seconds"] for p in report["photos"] if p.get("seconds") is not None]
            res["worst_photo_s"] = max(secs) if secs else None
            res["reasons"] = Counter((p["status"], (p["reason"] or "")[:40]) for p in report["photos"]).most_common(60)
        else:
            res["lost"] = [str(os.fsencode(str(p))) for p in exp]
            res["real_failed"] = []
        return res

    # ---- 1. the whole corpus as one case
    print(f"assess: the whole corpus as one case ({len(expected)} entries) ...", flush=True)
    rep = out / "report_all"
    shutil.rmtree(rep, ignore_errors=True)
    subset_real: set[bytes] = set()
    r = run_cli(["assess", str(corpus_dir), "--out", str(rep), "--case-id", "fuzz-all", *common], a.timeout,
                logs / "assess_all.log")
    runs.append(check_assess("whole corpus", rep, r, expected, ignored))
    print(f"  exit {r['exit']}, {r['wall_s']} s, {r['rss_mb']} MB, statuses {r.get('status')}", flush=True)

    # ---- 2. random mixed subsets: real photos of the shared data plus corpus files
    rng = random.Random(a.seed + 1)
    pool = real_photos(a.subsets * a.subset_real, rng)
    # every large photo and every bomb goes into one subset (small cases: the per-file memory bound),
    # the other places are drawn at random; a linked folder given directly is walked (the whole
    # corpus), so it is not a file of a subset
    heavy = sorted(p for p in expected if p.parent.name in ("01_real_large", "15_bomb"))
    drawable = [p for p in expected if not (p.is_symlink() and p.is_dir()) and p not in heavy]
    for s in range(a.subsets):
        reals = pool[s * a.subset_real:(s + 1) * a.subset_real]
        mine = heavy[s::a.subsets]
        bad = mine + rng.sample(drawable, max(0, a.subset_bad - len(mine)))
        files = reals + bad
        rng.shuffle(files)
        subset_real = {os.fsencode(str(p)) for p in reals} | {os.fsencode(str(p)) for p in bad if os.fsencode(str(p)) in real_set}
        rep = out / f"report_subset{s:02d}"
        shutil.rmtree(rep, ignore_errors=True)
        r = run_cli(["assess", *[str(p) for p in files], "--out", str(rep), "--case-id", f"fuzz-{s}", *common],
                    a.subset_timeout, logs / f"assess_subset{s:02d}.log")
        runs.append(check_assess(f"subset {s:02d}", rep, r, files, []))
        print(f"  subset {s:02d}: exit {r['exit']}, {r['wall_s']} s, {r['rss_mb']} MB, {r.get('status')}", flush=True)

    # ---- 3. dataset check on malformed annotation files
    print("dataset check on malformed annotation files ...", flush=True)
    ann = []
    for name, folder in malformed_annotation_sets(out / "annotations", a.seed):
        r = run_cli(["dataset", "check", str(folder), "--json", "--no-duplicates"], 120, logs / f"check_{name}.log")
        text = Path(r["log"]).read_bytes().decode("utf-8", "replace")
        try:
            js = json.loads(text[text.index("{"):text.rindex("}") + 1])
            errors = [p for p in js["problems"] if p["severity"] == "error"]
        except (ValueError, KeyError):
            js, errors = None, []
        r.update(name=name, crash=bool(r["hang"] is False and (r["exit"] not in (0, 1) or r["traceback"] or js is None)),
                 clear=bool(r["exit"] == 1 and errors and all(p["message"] for p in errors)),
                 first_error=(errors[0]["code"] + ": " + errors[0]["message"][:160]) if errors else None)
        ann.append(r)
    # ---- 4. evaluate classifier on malformed label CSVs
    print("evaluate classifier on malformed label CSVs ...", flush=True)
    from carcheck.models.classifier import SHIPPED_CLASSIFIERS

    head = str(SHIPPED_CLASSIFIERS["damaged"])
    csvs = []
    for name, p in malformed_label_csvs(out / "label_csvs"):
        r = run_cli(["evaluate", "classifier", head, str(p), "--split", "all", "--cache-dir", str(out / "feature_cache")],
                    300, logs / f"evaluate_{name}.log")
        text = Path(r["log"]).read_bytes().decode("utf-8", "replace")
        msg = " ".join(text.split())
        r.update(name=name, crash=bool(r["hang"] is False and (r["exit"] != 2 or r["traceback"])),
                 clear=bool(r["exit"] == 2 and p.name in msg and "error:" in msg),
                 message=msg[msg.find("error:"):][:200] if "error:" in msg else msg[-200:])
        csvs.append(r)

    # ---- totals
    every = runs + ann + csvs
    rss = [r["rss_mb"] for r in every if r["rss_mb"] is not None]
    tried = len(expected) + len(ignored) + sum(len(r["args"]) for r in runs[1:]) + len(ann) + len(csvs)
    totals = {
        "corpus_entries": len(entries), "files_tried": tried,
        "crashes": sum(bool(r.get("crash")) for r in every),
        "files_lost": sum(len(r.get("lost", [])) for r in runs),
        "hangs": sum(bool(r["hang"]) for r in every),
        "real_photos_failed": sum(len(r.get("real_failed", [])) for r in runs),
        "real_photos_in_corpus": len(real_set),
        "worst_wall_s": max(r["wall_s"] for r in every), "worst_wall_run": max(every, key=lambda r: r["wall_s"])["name"],
        "worst_photo_s": max((r["worst_photo_s"] for r in runs if r.get("worst_photo_s") is not None), default=None),
        "peak_rss_mb": max(rss) if rss else None,
        "peak_rss_mb_whole_corpus_case": runs[0]["rss_mb"],
        "peak_rss_mb_small_cases": max((r["rss_mb"] for r in every[1:] if r["rss_mb"] is not None), default=None),
        "malformed_files": len(ann) + len(csvs),
        "malformed_without_clear_error": sum(not r["clear"] for r in ann + csvs),
        "bench_wall_s": round(bench_elapsed(), 1),
    }
    met = {k: (totals[k] is not None and totals[k] <= v) for k, v in TARGETS.items()}
    from carcheck.models.runtime import cpu_info

    result = {"totals": totals, "targets": TARGETS, "met": met, "cpu": cpu_info(), "seed": a.seed,
              "corpus_kinds": dict(sorted(kinds.items())), "assess_runs": runs, "dataset_check_runs": ann,
              "evaluate_runs": csvs}
    a.results.parent.mkdir(parents=True, exist_ok=True)
    write_results(a.results, result, indent=2, default=str)
    print()
    print(f"{'':34s} {'measured':>10s} {'target':>8s}")
    for k, label in (("files_tried", "files tried"), ("crashes", "crashes"), ("files_lost", "files lost"),
                     ("hangs", "hangs"), ("real_photos_failed", "real photos failed"),
                     ("malformed_without_clear_error", "malformed files without clear error"),
                     ("worst_wall_s", "worst wall time (s, one command)"), ("worst_photo_s", "worst photo (s, in a report)"),
                     ("peak_rss_mb", "peak RSS (MB, any command)"),
                     ("peak_rss_mb_whole_corpus_case", "  of which: whole corpus, one case"),
                     ("peak_rss_mb_small_cases", "  every other command (<= 8 files)")):
        tgt = TARGETS.get(k, "")
        print(f"{label:34s} {str(totals[k]):>10s} {('<= ' + str(tgt)) if tgt != '' else '':>8s}")
    for r in every:
        if r.get("crash") or r.get("hang") or r.get("lost") or r.get("real_failed") or (r in ann + csvs and not r["clear"]):
            print(f"  !! {r['name']}: exit {r['exit']} hang {r['hang']} lost {len(r.get('lost', []))} "
                  f"real_failed {r.get('real_failed', [])[:3]} log {r['log']}")
    print(f"\nwritten {a.results} ({totals['bench_wall_s']:.0f} s)")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
