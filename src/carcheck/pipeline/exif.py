"""EXIF rules of the reused-photo check (issue 19), pure: :func:`exif_reasons` flags, inside one case, capture
dates more than ``max_days`` apart, photos from several camera models, and a Software tag that names editing
software. They are review reasons, not verdicts: a phone photo re-saved by a messenger loses its EXIF, and an
honest claim can mix two phones. :func:`read_photo_meta` reads the facts from a file (never raises).
Used by :func:`carcheck.pipeline.reuse.reuse_check`.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

__all__ = ["EDITING_SOFTWARE", "PhotoMeta", "read_photo_meta", "exif_reasons"]

#: Software-tag substrings (lower case) of editing programs; phone firmware and camera tags are not listed
EDITING_SOFTWARE = ("photoshop", "lightroom", "gimp", "snapseed", "picsart", "pixelmator", "affinity", "paint.net",
                    "canva", "photoscape", "fotor", "vsco", "facetune", "faceapp", "photodirector", "luminar",
                    "capture one", "darktable", "rawtherapee", "corel", "paintshop", "acdsee", "inpaint",
                    "photopea", "befunky", "airbrush", "meitu", "picmonkey", "imagemagick", "graphicsmagick")


@dataclass(frozen=True)
class PhotoMeta:
    """The EXIF facts the rules use (None when absent)."""

    photo: str
    captured: _dt.datetime | None = None
    camera: str | None = None
    software: str | None = None


def _parse_exif_date(v) -> _dt.datetime | None:
    if not isinstance(v, str):
        return None
    try:
        return _dt.datetime.strptime(v.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def read_photo_meta(path: str | Path, name: str | None = None) -> PhotoMeta:
    """Capture date (DateTimeOriginal, else DateTime), camera (Make + Model) and Software of a file.

    Never raises: an unreadable file or a corrupt EXIF block gives a :class:`PhotoMeta` of Nones.
    """
    name = name or str(path)
    try:
        with Image.open(path) as im:
            ex = im.getexif()
            sub = ex.get_ifd(0x8769) if ex else {}
            captured = _parse_exif_date(sub.get(36867)) or _parse_exif_date(ex.get(306))
            make, model = (str(ex.get(271) or "").strip("\x00 "), str(ex.get(272) or "").strip("\x00 "))
            if make and model.lower().startswith(make.lower()):
                camera = model  # "Canon" + "Canon EOS 5D": the model already names the make
            else:
                camera = " ".join(x for x in (make, model) if x) or None
            software = str(ex.get(305) or "").strip("\x00 ") or None
            return PhotoMeta(name, captured, camera, software)
    except Exception:  # metadata is optional: never let it stop a case
        return PhotoMeta(name)


def exif_reasons(metas: Sequence[PhotoMeta], max_days: float = 2.0) -> dict[str, list[str]]:
    """EXIF inconsistencies inside one case, as review reasons per photo.

    Rules:
        - capture dates: when the dated photos span more than ``max_days`` days, every photo more than
          ``max_days / 2`` days from the case's median capture time is flagged (with two photos, both);
        - camera: when the photos name several cameras, the photos of every camera but the most common one
          are flagged (all of them on a tie);
        - software: a Software tag containing a name of :data:`EDITING_SOFTWARE` is flagged.
    Args:
        metas: one :class:`PhotoMeta` per photo of the case.
        max_days: allowed span of capture dates, days.
    Returns:
        photo -> reasons (only photos with a reason).
    """
    out: dict[str, list[str]] = {}
    dated = [m for m in metas if m.captured is not None]
    if len(dated) >= 2:
        times = sorted(m.captured for m in dated)
        span = (times[-1] - times[0]).total_seconds() / 86400
        if span > max_days:
            med = statistics.median([t.timestamp() for t in times])
            for m in dated:
                off = abs(m.captured.timestamp() - med) / 86400
                if off > max_days / 2:
                    out.setdefault(m.photo, []).append(
                        f"capture date {m.captured:%Y-%m-%d %H:%M} is {off:.1f} days from the case's other photos "
                        f"(the case spans {span:.1f} days, {times[0]:%Y-%m-%d} to {times[-1]:%Y-%m-%d})")
    cams = [m for m in metas if m.camera]
    counts: dict[str, int] = {}
    for m in cams:
        counts[m.camera] = counts.get(m.camera, 0) + 1
    if len(counts) > 1:
        top = max(counts.values())
        majority = [c for c, k in counts.items() if k == top]
        keep = majority[0] if len(majority) == 1 else None
        others = ", ".join(f"{c} ({k})" for c, k in sorted(counts.items(), key=lambda kv: -kv[1]))
        for m in cams:
            if m.camera != keep:
                out.setdefault(m.photo, []).append(f"taken with {m.camera}; the case's photos name "
                                                   f"{len(counts)} cameras: {others}")
    for m in metas:
        if m.software and any(s in m.software.lower() for s in EDITING_SOFTWARE):
            out.setdefault(m.photo, []).append(f"EXIF Software tag names editing software: {m.software}")
    return out
