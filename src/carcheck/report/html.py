"""Write a case report: ``report.json`` (the schema) and a self-contained ``report.html`` (Jinja2).

The HTML opens with what a claims handler needs first (issue 16 item 4): the vehicle (make/model, or
"not one of the known models"), the car diagram (:mod:`.diagram`), the confident findings by part, each
with a crop of its best photo around the region, then what needs review and why, then the repair
estimate and the per-photo detail (every assessed photo with its part and damage overlays, a legend and
the numbers). :mod:`.pdf` prints the same page to ``report.pdf``. Every image written is passed through
:func:`~carcheck.report.privacy.blur_private_regions` first (crops are cut from the blurred photo)."""

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
from ..schema import CaseReport, DamageInstance, Finding, PartFinding, PhotoDetection, SizeCm

__all__ = ["palette", "overlay", "overlay_cam", "legend", "write_report", "prepare_out_dir", "DAMAGE_COLOURS",
           "size_text", "vehicle_line", "vehicle_text_lines", "best_detection", "crop_around",
           "draw_instances", "instances_text"]

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


def draw_instances(image: np.ndarray, instances: Sequence[DamageInstance], scale: tuple[float, float],
                   colours: Mapping[str, tuple[int, int, int]]) -> np.ndarray:
    """Each damage instance's outline (its damage type's colour, a dark edge under it) and its number.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, not changed (a copy is drawn on).
        instances: the photo's instances (outlines in the photo's pixels).
        scale: image pixels per photo pixel along x and y.
        colours: damage type -> RGB (types not listed: white).
    Returns:
        the drawn copy, ``(H, W, 3)`` uint8.
    """
    import cv2

    out = np.ascontiguousarray(image).copy()
    sx, sy = scale
    thick = max(1, round(min(out.shape[:2]) / 300))
    for inst in instances:
        if len(inst.polygon) < 6:
            continue
        pts = np.round(np.array(inst.polygon, np.float64).reshape(-1, 2) * (sx, sy)).astype(np.int32)
        colour = tuple(int(c) for c in colours.get(inst.damage, (255, 255, 255)))
        cv2.polylines(out, [pts], True, (20, 20, 20), thick + 2)
        cv2.polylines(out, [pts], True, colour, thick)
        x, y = int(pts[:, 0].min()), int(pts[:, 1].min())
        org = (max(0, x), max(12 * thick, y - 3))
        cv2.putText(out, str(inst.id), org, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thick, (20, 20, 20), thick + 2, cv2.LINE_AA)
        cv2.putText(out, str(inst.id), org, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thick, colour, thick, cv2.LINE_AA)
    return out


def instances_text(pf: PartFinding) -> str:
    """A part's damage instances in words: "3 instance(s) in one photo, the largest 12 x 4 cm (#1 dent in
    05.jpg)"; empty without instances (reports before 1.14)."""
    if not pf.instances or not pf.instance_count:
        return ""
    sized = [i for i in pf.instances if i.size_cm is not None and i.size_cm.area_cm2 is not None]
    biggest = max(sized, key=lambda i: i.size_cm.area_cm2) if sized else max(pf.instances, key=lambda i: i.area_px)
    where = f"#{biggest.id} {biggest.damage.replace('_', ' ')} in {Path(biggest.photo).name}"
    most = "in one photo" if pf.instance_count == 1 else "in the photo showing the most"
    return f"{pf.instance_count} instance(s) {most}, the largest " + (f"{size_text(biggest.size_cm)} ({where})"
                                                                       if sized else where)


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
    for name in ("report.json", "report.html", "report.pdf"):
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


#: A photo type (:data:`~carcheck.schema.PHOTO_TYPES`) in words.
PHOTO_TYPE_WORDS = {"exterior_full": "exterior full view", "exterior_closeup": "exterior close-up",
                    "interior": "interior", "document": "document", "vin_dashboard": "VIN / odometer / dashboard close-up",
                    "no_vehicle": "no vehicle"}


def _n(v: float) -> str:
    """A length / area for a person: one decimal under 10, whole numbers above."""
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"


def size_text(s: SizeCm | None) -> str:
    """A :class:`~carcheck.schema.SizeCm` in words: ``"about 12 x 4.5 cm (10-14 x 4.0-5.0 cm),
    40 cm² (30-56 cm²)"``, ``"size in cm not estimated: <reason>"``, or ``""`` for None (old reports)."""
    if s is None:
        return ""
    if s.area_cm2 is None or s.width_cm is None or s.height_cm is None:
        return f"size in cm not estimated: {s.reason or 'no scale'}"
    (wl, wh), (hl, hh), (al, ah) = s.width_range_cm, s.height_range_cm, s.area_range_cm2
    return (f"about {_n(s.width_cm)} x {_n(s.height_cm)} cm ({_n(wl)}-{_n(wh)} x {_n(hl)}-{_n(hh)} cm), "
            f"{_n(s.area_cm2)} cm² ({_n(al)}-{_n(ah)} cm²)")


def vehicle_line(report: CaseReport) -> str:
    """The report's first line about the car: the most likely make/model with its probability, or
    ``"not one of the known models"`` when the case's photos fall outside the models the classifier
    knows (:attr:`~carcheck.schema.VehicleIdentity.in_scope`), or why there is no identification."""
    v = report.vehicle
    if v is None:
        return "not identified (no make/model classifier ran on an assessed photo)"
    if not v.in_scope or not v.make_model_top3:
        unknown = (f"not one of the known models (the classifier knows {v.known_models})" if v.known_models
                   else "no make/model classifier")
        if v.vin is not None and v.vin.manufacturer:  # schema >= 1.11: the VIN's WMI names the maker
            return f"{v.vin.manufacturer} (by the VIN's WMI {v.vin.wmi}; make/model: {unknown})"
        return unknown
    top = v.make_model_top3[0]
    return f"{top.label.replace('_', ' ')} ({100 * top.probability:.0f}%)"


def vehicle_text_lines(report: CaseReport) -> list[tuple[str, bool]]:
    """What the plates, VIN and odometer photos say (schema >= 1.11; plate 1.12), one ``(line, flag)`` each for the
    HTML header beside make/model; ``flag``: a photo shows another plate, or the VIN's manufacturer disagrees with
    make/model. The plate is shown masked only."""
    v = report.vehicle
    out: list[tuple[str, bool]] = []
    c = report.consistency
    if c is not None and c.plate:
        reads = [p.plate for p in report.photos if p.plate is not None]
        other = sum(r.agrees_with_case is False for r in reads)
        out.append((f"Licence plate {c.plate} (masked) read on {sum(bool(r.agrees_with_case) for r in reads)} photo(s)"
                    + (f"; another plate on {other} photo(s)" if other else ""), other > 0))
    if v is None:
        return out
    if v.vin is not None:
        n = v.vin
        read = "complete" if n.complete else f"partial: {len(n.text)} of 17 characters read"
        check = {True: "check digit holds", False: "CHECK DIGIT FAILS", None: "check digit n/a"}[n.check_digit_valid]
        maker = f"WMI {n.wmi}: {n.manufacturer or 'not in the WMI table'}" if n.wmi else "no WMI"
        agree = {True: "agrees with make/model", False: "DISAGREES with make/model",
                 None: "make/model agreement unknown"}[n.agrees_with_make_model]
        src = f" · from {n.photo.split('/')[-1]}" if n.photo else ""
        out.append((f"VIN {n.text} ({read}; {check}) · {maker} · {agree}{src}",
                    n.agrees_with_make_model is False or n.check_digit_valid is False))
    if v.odometer is not None:
        o = v.odometer
        unit = "" if o.unit == "unknown" else f" {o.unit}"
        src = f" · from {o.photo.split('/')[-1]}" if o.photo else ""
        out.append((f"Odometer {o.value:,}{unit}{' (unit not read)' if o.unit == 'unknown' else ''} · OCR "
                    f"confidence {o.confidence:.2f}{src}", False))
    return out


def best_detection(report: CaseReport, finding: Finding | PartFinding, have: Mapping[str, object] | None = None
                   ) -> tuple[str, PhotoDetection] | None:
    """The region that shows a finding best: among its photos (those in ``have``, when given) the
    detections of its (part, damage) -- for a per-part finding, of its part with any of its damage types --
    within ``0.9 x`` the highest C_base, and of those the largest in its photo (share of the image; then
    C_base). None: no such region."""
    by = {p.path: p for p in report.photos}
    if isinstance(finding, PartFinding):
        match = lambda d: d.part == finding.part and d.damage in finding.damages  # noqa: E731
    else:
        match = lambda d: (d.part, d.damage) == (finding.part, finding.damage)  # noqa: E731
    cands = [(name, d) for name in finding.photos if name in by and (have is None or name in have)
             for d in by[name].detections if match(d)]
    if not cands:
        return None
    top = max(d.c_base for _, d in cands)
    sure = [nd for nd in cands if nd[1].c_base >= 0.9 * top]
    return max(sure, key=lambda nd: (nd[1].area_fraction_of_image, nd[1].c_base))


def crop_around(image: np.ndarray, bbox_xywh: Sequence[float], scale: tuple[float, float] = (1.0, 1.0),
                margin: float = 0.6, min_side: int = 96) -> np.ndarray:
    """A crop of ``image`` around a region, the region outlined.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (already privacy-blurred).
        bbox_xywh: the region's box in the report's (original-photo) pixels.
        scale: (x, y) factors from those pixels to ``image``'s.
        margin: context added on every side, as a share of the box's size.
        min_side: the crop is at least this many px wide and tall (where the image allows).
    Returns:
        ``(h, w, 3)`` uint8 RGB, a copy.
    """
    import cv2

    H, W = image.shape[:2]
    x, y, w, h = (bbox_xywh[0] * scale[0], bbox_xywh[1] * scale[1], bbox_xywh[2] * scale[0], bbox_xywh[3] * scale[1])
    cw, ch = max(w * (1 + 2 * margin), min_side), max(h * (1 + 2 * margin), min_side)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(max(0, min(W - cw, cx - cw / 2))), int(max(0, min(H - ch, cy - ch / 2)))
    x1, y1 = int(min(W, x0 + cw)), int(min(H, y0 + ch))
    out = np.ascontiguousarray(image.copy())
    cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), (255, 225, 25), 2)
    return out[y0:y1, x0:x1].copy()


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
    # memory (issue 20): the per-photo entries are made one at a time while the page streams to the file,
    # so a case of many photos never holds every photo's encoded images (nor the whole page) at once;
    # only the photos a crop is cut from are blurred ahead, and each photo is blurred once
    blurred: dict[str, tuple[np.ndarray, int]] = {}

    def blurred_of(path: str) -> tuple[np.ndarray, int]:
        if path not in blurred:
            v = visuals[path]
            blurred[path] = blur_private_regions(v.image, getattr(v, "private_regions", None))
        return blurred[path]

    def photo_entries():
        for p in report.photos:
            entry = {"report": p, "name": Path(p.path).name}
            v = visuals.get(p.path)
            if v is not None:
                base, n_blurred = blurred_of(p.path)  # the photo's cached regions (PhotoVisual.private_regions)
                del blurred[p.path]
                dmg = overlay(base, v.damage_label, damage_colours, 0.6)
                if p.instances and p.width and p.height:  # outlines with their numbers (schema >= 1.14)
                    dmg = draw_instances(dmg, p.instances, (dmg.shape[1] / p.width, dmg.shape[0] / p.height),
                                         dict(damage_legend))
                entry.update(original=_data_uri(base), parts=_data_uri(overlay(base, v.part_label, part_colours)),
                             damage=_data_uri(dmg), blurred=n_blurred)
                cam = getattr(v, "gradcam", None)
                if cam is not None:  # drawn over the already blurred photo: one face/plate search per photo
                    entry["gradcam"] = _data_uri(overlay_cam(base, cam))
            yield entry

    by_path = {p.path: p for p in report.photos}

    def with_crop(f: Finding | PartFinding) -> dict:
        """A finding with its best region and, where that photo is drawn, a crop around it."""
        entry = {"finding": f, "crop": None, "crop_photo": None,
                 "size": size_text(f.size_cm) if isinstance(f, Finding) else ""}
        best = best_detection(report, f, visuals) or best_detection(report, f)
        if best is not None:
            name, det = best
            entry["crop_photo"] = Path(name).name
            ph = by_path[name]
            if name in visuals and ph.width and ph.height:
                img = blurred_of(name)[0]
                entry["crop"] = _data_uri(crop_around(img, det.bbox_xywh, (img.shape[1] / ph.width,
                                                                        img.shape[0] / ph.height)))
        return entry

    review_parts = []
    if report.parts:  # schema >= 1.8: the confident per-part findings are what the report states as damaged
        confident = [with_crop(pf) for pf in report.parts if not pf.needs_review]
        review_parts = [pf for pf in report.parts if pf.needs_review]
        for e in confident:  # each damage type seen on the part, with its size
            e["types"] = [{"finding": f, "size": size_text(f.size_cm)} for f in report.findings
                          if f.part == e["finding"].part and f.damage in e["finding"].damages]
        review_findings = [{"finding": f, "size": size_text(f.size_cm)} for f in report.findings
                           if f.part == "unassigned" and f.needs_review]
    else:  # older reports: the confident (part, damage) findings, grouped by part
        confident = [with_crop(f) for f in report.findings if not f.needs_review]
        review_findings = [{"finding": f, "size": size_text(f.size_cm)} for f in report.findings if f.needs_review]
    parts: dict[str, list] = {}  # confident findings by part, in report order
    for e in confident:
        parts.setdefault(e["finding"].part, []).append(e)
    env = Environment(loader=PackageLoader("carcheck.report", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["size_text"] = size_text
    env.filters["instances_text"] = instances_text
    env.filters["photo_type_words"] = lambda t: PHOTO_TYPE_WORDS.get(t, t.replace("_", " "))
    from .diagram import car_diagram_svg, part_states

    states = part_states(report)
    stream = env.get_template("report.html").stream(
        report=report, photos=photo_entries(), diagram=car_diagram_svg(states), states=states,
        vehicle=vehicle_line(report), vehicle_text=vehicle_text_lines(report), confident_by_part=parts, review_parts=review_parts,
        review_findings=review_findings, review_photos=[p for p in report.photos if p.review_reasons],
        part_legend=[(n, _hex(c)) for n, c in part_legend], damage_legend=[(n, _hex(c)) for n, c in damage_legend])
    paths = {"json": out / "report.json", "html": out / "report.html"}
    paths["json"].write_text(report.model_dump_json(indent=2), encoding="utf-8")
    with open(paths["html"], "w", encoding="utf-8") as fh:
        stream.dump(fh)
    return paths
