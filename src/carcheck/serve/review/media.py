"""What the review page shows of a case's report: the photo behind each report entry, the boxes and
damage instances of each finding, the shapes drawn on each photo, the part / damage overlay images of
the stored report.html, and finding crops."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...schema import DamageInstance, PhotoDetection, PhotoReport
from ..db.models import Case, Photo
from ..reports import stored_report

__all__ = ["report_photos", "finding_boxes", "finding_instances", "instance_key", "photo_shapes", "overlay_path",
           "crop_path"]

_IMG = re.compile(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)" alt="(parts|damage)">')


def report_photos(session: Session, case: Case) -> list[tuple[Photo, PhotoReport]]:
    """(stored photo, its entry in the validated report's photos) in report order; empty when the case has
    no report. The worker names a photo by its public id (``photo_….jpg``), so an entry's file stem is the
    photo's id.

    Raises:
        StoredReportError: the stored report is not a valid report (:func:`~carcheck.serve.reports.stored_report`).
    """
    report = stored_report(case)
    if report is None:
        return []
    photos = {p.public_id: p for p in session.scalars(select(Photo).where(Photo.case_id == case.id,
                                                                          Photo.status == "stored"))}
    out = []
    for entry in report.photos:
        p = photos.get(PurePosixPath(entry.path.replace("\\", "/")).stem)
        if p is not None:
            out.append((p, entry))
    return out


def finding_boxes(finding: dict, photos: list[tuple[Photo, PhotoReport]]
                  ) -> list[tuple[Photo, list[float], PhotoDetection]]:
    """Every detection of ``finding`` (a finding row's data: same part and damage, in the photos the finding
    names): ``(photo, bbox_xywh in original-photo px, detection)``, largest first."""
    names = set(finding.get("photos", []))
    out = []
    for p, entry in photos:
        if entry.path not in names:
            continue
        for d in entry.detections:
            if d.part == finding.get("part") and d.damage == finding.get("damage"):
                out.append((p, list(d.bbox_xywh), d))
    out.sort(key=lambda t: -t[1][2] * t[1][3])
    return out


def finding_instances(finding: dict, photos: list[tuple[Photo, PhotoReport]]
                      ) -> list[tuple[Photo, DamageInstance]]:
    """The damage instances of ``finding`` (a finding row's data; report schema >= 1.14): in the photos
    the finding names, those of its damage type whose ``parts`` contain its part (the relation of
    :func:`carcheck.pipeline.instances.part_instances`), in photo order, then by id. Empty for a report
    without instances. One instance may belong to several findings (it is not split at part boundaries)."""
    names = set(finding.get("photos", []))
    part, damage = finding.get("part"), finding.get("damage")
    return [(p, inst) for p, entry in photos if entry.path in names
            for inst in entry.instances if inst.damage == damage and part in inst.parts]


def instance_key(photo: Photo, inst: DamageInstance) -> str:
    """How a decision names an instance: ``<photo public id>:<instance id>``."""
    return f"{photo.public_id}:{inst.id}"


def photo_shapes(state, fdata: dict[int, dict], photos: list[tuple[Photo, PhotoReport]]
                 ) -> tuple[dict[str, list[dict]], dict[int, bool], dict[int, list[dict]]]:
    """What the case page draws: (shapes per photo id, whether each finding has a crop, each finding's
    instances for its keep / reject checkboxes). A finding with instances is drawn as their outlines,
    numbers and boxes (a rejected instance, or every instance of a rejected finding, in the rejected
    style); one without (a report before 1.14) as its detections' boxes. ``state``: the case's
    :class:`~carcheck.serve.review.schemas.CaseReviewState`; ``fdata``: finding id -> its row's data."""
    shapes: dict[str, list[dict]] = {p.public_id: [] for p, _ in photos}
    crops, instances = {}, {}
    for f in state.findings:
        label = f"{f.damage} · {f.part}"
        fb = finding_boxes(fdata[f.id], photos)
        crops[f.id] = bool(fb)
        fi = finding_instances(fdata[f.id], photos)
        rejected = set(f.rejected_instances)
        instances[f.id] = []
        for p, inst in fi:
            key = instance_key(p, inst)
            kept = f.state != "rejected" and key not in rejected
            shapes[p.public_id].append({"finding": f.id, "box": inst.bbox_xywh, "outline": inst.polygon,
                                        "number": inst.id, "state": f.state if kept else "rejected",
                                        "label": f"{label} · instance {inst.id}" + ("" if kept else " (rejected)")})
            instances[f.id].append({"key": key, "id": inst.id, "photo": p.filename, "score": inst.score,
                                    "area_px": inst.area_px,
                                    # the confirm form's proposal: after a rejection, confirming keeps all
                                    "kept": f.state == "rejected" or key not in rejected})
        if not fi:
            for p, box, _ in fb:
                shapes[p.public_id].append({"finding": f.id, "box": box, "label": label, "state": f.state})
    for a in state.added:
        shapes.setdefault(a.photo_id, []).append({"finding": None, "box": a.bbox_xywh, "polygon": a.polygon,
                                                  "label": f"{a.damage} · {a.part} (added)", "state": "added"})
    return shapes, crops, instances


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def overlay_path(store, session: Session, case: Case, photo: Photo, kind: str) -> Path | None:
    """The ``parts`` or ``damage`` overlay image of ``photo`` from the case's stored report.html
    (privacy-blurred photo with the label map blended, at network size), extracted once into
    ``DATA_DIR/review/<case>/<job>/``; None when the report has no such image."""
    if kind not in ("parts", "damage") or not case.report_html:
        return None
    folder = store.root / "review" / case.public_id / str(case.report_job_id)
    target = folder / f"{photo.public_id}_{kind}.jpg"
    if target.exists():
        return target
    html_path = store.root / case.report_html
    if not html_path.is_file():
        return None
    html = html_path.read_text(encoding="utf-8", errors="replace")
    chunks = html.split('<div class="photo ')[1:]
    report = stored_report(case)
    entries = report.photos if report is not None else []
    by_path = {e.path: p.public_id for p, e in report_photos(session, case)}
    for chunk, entry in zip(chunks, entries):
        pid = by_path.get(entry.path)
        if pid is None:
            continue
        for data, k in _IMG.findall(chunk):
            _atomic_write(folder / f"{pid}_{k}.jpg", base64.b64decode(data))
    (folder / ".done").touch()
    return target if target.exists() else None


def crop_path(store, case: Case, photo: Photo, box: list[float], key: str, margin: float = 0.35,
              side: int = 220) -> Path:
    """A JPEG crop of the blurred derivative of ``photo`` around ``box`` (original-photo px, widened
    by ``margin`` of its size on each side, at most ``side`` px), cached under ``DATA_DIR/review``."""
    from PIL import Image

    target = store.root / "review" / case.public_id / str(case.report_job_id) / f"crop_{key}.jpg"
    if target.exists():
        return target
    src = store.derivative(photo.sha256)
    with Image.open(src) as im:
        sx = im.width / float(photo.width or im.width)
        sy = im.height / float(photo.height or im.height)
        x, y, w, h = box
        mx, my = max(w * margin, 12), max(h * margin, 12)
        crop = im.crop((int(max(0, (x - mx) * sx)), int(max(0, (y - my) * sy)),
                        int(min(im.width, (x + w + mx) * sx)), int(min(im.height, (y + h + my) * sy))))
        crop.thumbnail((side, side))
        import io

        buf = io.BytesIO()
        crop.convert("RGB").save(buf, "JPEG", quality=85)
    _atomic_write(target, buf.getvalue())
    return target
