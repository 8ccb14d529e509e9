"""Write a before/after comparison: ``compare.json`` (the :class:`~carcheck.schema.CompareReport`)
and a self-contained ``compare.html`` showing, for every part, its status and the photos of both cases side by
side. Text is escaped (Jinja2 autoescape); every image is passed through
:func:`~carcheck.report.privacy.blur_private_regions` before it is written, as in the case report."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Mapping

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from ..schema import PRIVACY_NOTE, CompareReport
from .privacy import blur_private_regions

__all__ = ["write_compare", "MAX_PHOTOS_PER_CELL"]

#: photos shown per part and side (the JSON lists them all)
MAX_PHOTOS_PER_CELL = 4


def _uri(image: np.ndarray, side: int = 360) -> str:
    img = Image.fromarray(image)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_compare(report: CompareReport, images: Mapping[tuple[str, str], np.ndarray], out_dir: str | Path
                  ) -> dict[str, Path]:
    """Write ``compare.json`` and ``compare.html`` into ``out_dir`` (created).

    Args:
        report: the comparison.
        images: ``("before" | "after", photo path as in the case report)`` -> ``(H, W, 3)`` ``uint8`` RGB;
            photos without an image are listed by name only.
    Returns:
        ``{"json": path, "html": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[tuple[str, str], str] = {}

    def figs(side: str, photos: list[str]) -> list[dict]:
        res = []
        for ph in photos[:MAX_PHOTOS_PER_CELL]:
            key = (side, ph)
            if key not in cache and key in images:
                cache[key] = _uri(blur_private_regions(images[key])[0])  # one face/plate search per photo
            if key in cache:
                res.append({"uri": cache[key], "name": Path(ph).name})
        return res

    rows = [{"p": p, "before": figs("before", p.before_photos), "after": figs("after", p.after_photos)}
            for p in report.parts]
    env = Environment(loader=PackageLoader("carcheck.report", "templates"), autoescape=select_autoescape(["html"]))
    html = env.get_template("compare.html").render(c=report, rows=rows, privacy=PRIVACY_NOTE)
    paths = {"json": out / "compare.json", "html": out / "compare.html"}
    paths["json"].write_text(report.model_dump_json(indent=2), encoding="utf-8")
    paths["html"].write_text(html, encoding="utf-8")
    return paths
