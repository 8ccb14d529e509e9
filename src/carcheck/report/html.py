"""Write a case report: ``report.json`` (the schema) and a self-contained ``report.html`` (Jinja2)
with every assessed photo, its part and damage overlays, a legend and the findings table.
Every image written is passed through :func:`~carcheck.report.privacy.blur_private_regions` first."""

from __future__ import annotations

import base64
import colorsys
import io
import tempfile
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from .privacy import blur_private_regions
from .schema import CaseReport

__all__ = ["palette", "overlay", "overlay_cam", "legend", "write_report", "prepare_out_dir", "DAMAGE_COLOURS"]

#: Colours of the damage classes, in class order of whichever damage taxonomy the model has (more
#: classes than listed continue with :func:`palette` hues); saturated, distinct from the part palette.
DAMAGE_COLOURS = ((230, 25, 75), (255, 225, 25), (145, 30, 180), (0, 130, 200), (245, 130, 48), (70, 240, 240))


class _Visual(Protocol):
    image: np.ndarray
    part_label: np.ndarray
    damage_label: np.ndarray


def palette(n: int, saturation: float = 0.75, value: float = 0.95, offset: float = 0.0) -> list[tuple[int, int, int]]:
    """``n`` well-separated RGB colours (golden-ratio hues)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((offset + i * 0.618033988749895) % 1.0, saturation, value)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def overlay(image: np.ndarray, label: np.ndarray, colours: Sequence[tuple[int, int, int]], alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an RGB ``uint8`` image; label 0 stays untouched.

    Args:
        image: ``(H, W, 3)`` uint8; label: ``(H, W)`` int, value ``i`` drawn with ``colours[i - 1]``.
    """
    out = image.astype(np.float32)
    lut = np.zeros((len(colours) + 1, 3), np.float32)
    lut[1:] = colours
    m = label > 0
    out[m] = (1 - alpha) * out[m] + alpha * lut[label[m]]
    return out.clip(0, 255).astype(np.uint8)


def overlay_cam(image: np.ndarray, cam: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Blend a Grad-CAM map (JET colour map) over an RGB ``uint8`` ``(H, W, 3)`` image of the same size.

    Returns:
        RGB ``uint8`` ``(H, W, 3)``.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=1 - weight)


def _data_uri(image: np.ndarray, quality: int = 85) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _hex(c: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % c


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the report folder and prove that the report files can be written there, before any
    work starts (``carcheck assess`` calls it before loading a model).

    Returns:
        the folder as a ``Path``.
    Raises:
        ValueError: naming the folder and the cause: it is a file, it cannot be created, it
            cannot be written to, or ``report.json`` / ``report.html`` in it is not a file.
    """
    from ..data.images import display_name

    out = Path(out_dir)
    where = display_name(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{where}: exists and is not a folder (--out names the report folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{where}: cannot create the report folder ({e.strerror or e})") from None
    for name in ("report.json", "report.html"):
        f = out / name
        if f.exists() and not f.is_file():
            raise ValueError(f"{display_name(f)}: exists and is not a file")
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".carcheck-write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"{where}: cannot write into the report folder ({e.strerror or e})") from None
    return out


def legend(report: CaseReport, task: str, names: Sequence[str] | None = None) -> list[tuple[str, tuple[int, int, int]]]:
    """(class name, RGB colour) of a segmentation task's classes, background excluded, in label order.

    Args:
        report: its ``taxonomies`` name the task's taxonomy (schema >= 1.4).
        task: ``parts`` or ``damage``.
        names: the class names when given explicitly (overrides the report's taxonomy).
    Raises:
        ValueError: neither ``names`` nor a taxonomy for ``task`` in the report.
    """
    if names is None:
        from ..data.taxonomy import get_taxonomy

        if task not in report.taxonomies:
            raise ValueError(f"the report names no {task!r} taxonomy: pass the class names")
        names = get_taxonomy(report.taxonomies[task]).classes
    names = list(names)
    if task == "damage":
        colours = list(DAMAGE_COLOURS[:len(names)]) + palette(max(0, len(names) - len(DAMAGE_COLOURS)), offset=0.33)
    else:
        colours = palette(len(names))
    return list(zip(names, colours))


def write_report(report: CaseReport, visuals: Mapping[str, _Visual], out_dir: str | Path,
                 part_names: Sequence[str] | None = None, damage_names: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (created).

    Args:
        report: the case report.
        visuals: photo path -> what to draw (photo, part and damage label maps at network size,
            optional Grad-CAM map); photos without one are listed without images.
        out_dir: the report folder.
        part_names, damage_names: class names of the label maps (default: the report's taxonomies),
            drawn and listed in the legend with :func:`legend`'s colours.
    Returns:
        ``{"json": path, "html": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    part_legend, damage_legend = legend(report, "parts", part_names), legend(report, "damage", damage_names)
    part_colours, damage_colours = [c for _, c in part_legend], [c for _, c in damage_legend]
    photos = []
    for p in report.photos:
        entry = {"report": p, "name": Path(p.path).name}
        v = visuals.get(p.path)
        if v is not None:
            base, n_blurred = blur_private_regions(v.image)
            entry.update(original=_data_uri(base), parts=_data_uri(overlay(base, v.part_label, part_colours)),
                         damage=_data_uri(overlay(base, v.damage_label, damage_colours, 0.6)), blurred=n_blurred)
            cam = getattr(v, "gradcam", None)
            if cam is not None:  # drawn over the already blurred photo: one face/plate search per photo
                entry["gradcam"] = _data_uri(overlay_cam(base, cam))
        photos.append(entry)
    env = Environment(loader=PackageLoader("carcheck.report", "templates"), autoescape=select_autoescape(["html"]))
    from .diagram import car_diagram_svg, part_states

    html = env.get_template("report.html").render(
        report=report, photos=photos, diagram=car_diagram_svg(part_states(report)),
        part_legend=[(n, _hex(c)) for n, c in part_legend], damage_legend=[(n, _hex(c)) for n, c in damage_legend])
    paths = {"json": out / "report.json", "html": out / "report.html"}
    paths["json"].write_text(report.model_dump_json(indent=2), encoding="utf-8")
    paths["html"].write_text(html, encoding="utf-8")
    return paths
