"""Reviewed cases as a COCO instances dataset for retraining (``carcheck export reviewed``,
``GET /v1/export/coco``).

Layout: ``OUT/annotations.json`` and ``OUT/images/<photo id>.jpg``. The images are the
**privacy-blurred derivatives** the service serves to viewers (faces and plates blurred, at most
1600 px on the longer side), not the originals: an export leaves the service's access control (it is
copied to training machines and shared), so it should carry no personal data; the damage a
segmenter learns lies on body panels, glass and lights, not on faces or plates, so the blur costs
training almost nothing. (``originals=True``, CLI ``--originals``, exports the stored originals for
an operator whose training data may hold them.)

Annotations, in the image's pixels (boxes and outlines scaled from the original photo):
    * a finding reviewers confirmed, corrected or accepted, with its reviewed damage type as the
      category: where its report has damage instances (schema >= 1.14), each instance the reviewer kept,
      its ``segmentation`` the instance's outline (``"shape": "polygon"``, ``"instance"``: its number in
      the photo, ``"photo"``: the photo's id; ``area``: the polygon's); an instance on two parts belongs
      to two findings but is written once, for the finding that keeps it whose part holds most of it;
    * without instances (reports before 1.14), each detection of the finding: the report stores its box,
      not a mask, so its ``segmentation`` is the box as a polygon (``"shape": "box"``);
    * each added damage: its polygon where drawn, else its box;
    * rejected predictions are not annotations: they are kept as negatives in the top-level
      ``negatives`` list (same fields: image_id, category_id, bbox, ...), which COCO readers ignore:
      the detections or instances of a rejected finding, and each instance reviewers rejected that no
      finding keeps (category: the predicted type).
Every photo the report assessed is an image, also one without damage (background for training).
Categories: the report's damage taxonomy (e.g. ``damage_type``: dent, scratch, broken), so
``carcheck train segmentation --task damage:damage_type:OUT/annotations.json`` reads it as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Case, Finding, Photo
from ..reports import stored_report
from .logic import case_taxonomy, model_version
from .media import finding_boxes, finding_instances, instance_key, report_photos
from .models import AddedDamage, CaseReview, FindingReview

__all__ = ["export_coco", "POSITIVE_STATES"]

POSITIVE_STATES = ("confirmed", "corrected", "accepted")


def _box_poly(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def _poly_area(poly: list[float]) -> float:
    """Area of a closed polygon ``[x1, y1, x2, y2, ...]`` (shoelace)."""
    xs, ys = poly[0::2], poly[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2.0


def export_coco(session: Session, store, out: str | Path, tenant_id: int | None = None,
                originals: bool = False) -> dict:
    """Write the reviewed cases (closed reviews of the current report) of ``tenant_id`` (None: all
    tenants) into ``out`` (created; an ``annotations.json`` there is replaced).

    Returns:
        summary ``{"annotations": path, "images": n, "annotations_count": n, "negatives": n, "cases": n}``.
    Raises:
        ValueError: reviewed cases whose reports use different damage taxonomies (one export, one taxonomy).
        StoredReportError: a reviewed case's stored report is not a valid report (a ValueError too).
    """
    from PIL import Image

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    q = (select(Case).join(CaseReview, (CaseReview.case_id == Case.id) & (CaseReview.job_id == Case.report_job_id))
         .where(CaseReview.state == "reviewed", Case.status == "assessed").order_by(Case.id))
    if tenant_id is not None:
        q = q.where(Case.tenant_id == tenant_id)
    cases = list(session.scalars(q))
    damage_names, taxonomy = None, None
    images, anns, negs = [], [], []
    image_ids: dict[int, tuple[int, float, float]] = {}

    def image_of(photo) -> tuple[int, float, float]:
        if photo.id in image_ids:
            return image_ids[photo.id]
        name = f"{photo.public_id}.jpg"
        if originals:
            src = store.blob_path(photo.sha256)
            with Image.open(src) as im:
                im.convert("RGB").save(out / "images" / name, "JPEG", quality=95)
                w, h = im.size
        else:
            src = store.derivative(photo.sha256)
            shutil.copyfile(src, out / "images" / name)
            with Image.open(src) as im:
                w, h = im.size
        iid = len(images) + 1
        images.append({"id": iid, "file_name": f"images/{name}", "width": w, "height": h,
                       "carcheck_photo": photo.public_id})
        image_ids[photo.id] = (iid, w / float(photo.width or w), h / float(photo.height or h))
        return image_ids[photo.id]

    def scaled(sx, sy, box):
        x, y, w, h = box
        return [round(x * sx, 2), round(y * sy, 2), round(w * sx, 2), round(h * sy, 2)]

    for case in cases:
        report = stored_report(case)
        tax = report.taxonomies.get("damage", "damage_type")
        if taxonomy is None:
            taxonomy, damage_names = tax, case_taxonomy(report)[0]
        elif tax != taxonomy:
            raise ValueError(f"case {case.public_id}: damage taxonomy {tax} differs from {taxonomy} of the earlier "
                             "cases; export them separately")
        cat = {n: i + 1 for i, n in enumerate(damage_names)}
        photos = report_photos(session, case)
        for p, entry in photos:
            if entry.status == "assessed":
                image_of(p)
        version = model_version(report)
        claims: dict[tuple[int, int], tuple] = {}  # (photo, instance) -> (photo, instance, [(kept, f, fr)])
        for f, fr in session.execute(select(Finding, FindingReview).join(FindingReview, FindingReview.finding_id == Finding.id)
                                     .where(Finding.case_id == case.id).order_by(Finding.index)).all():
            if fr.state not in POSITIVE_STATES + ("rejected",):
                continue
            fi = finding_instances(f.data, photos)
            for photo, inst in fi:
                kept = fr.state != "rejected" and instance_key(photo, inst) not in (fr.rejected_instances or [])
                claims.setdefault((photo.id, inst.id), (photo, inst, []))[2].append((kept, f, fr))
            if fi:
                continue
            for photo, box, det in finding_boxes(f.data, photos):
                iid, sx, sy = image_of(photo)
                b = scaled(sx, sy, box)
                item = {"image_id": iid, "bbox": b, "area": round(b[2] * b[3], 2), "iscrowd": 0,
                        "part": fr.part, "review_state": fr.state, "predicted_damage": f.damage,
                        "predicted_part": f.part, "c_refined": f.c_refined, "case": case.public_id,
                        "finding": f.id, "model_version": version, "shape": "box"}
                if fr.state == "rejected":
                    negs.append({"id": len(negs) + 1, "category_id": cat[f.damage], **item})
                else:
                    anns.append({"id": len(anns) + 1, "category_id": cat[fr.damage],
                                 "segmentation": [_box_poly(*b)], **item})
        for photo, inst, cl in claims.values():
            iid, sx, sy = image_of(photo)
            rank = {part: i for i, part in enumerate(inst.parts)}
            kept, f, fr = min(cl, key=lambda c: (not c[0], rank.get(c[1].part, len(rank)), c[1].index))
            b = scaled(sx, sy, inst.bbox_xywh)
            if len(inst.polygon) >= 6:
                seg, shape = [round(v * (sx if i % 2 == 0 else sy), 2) for i, v in enumerate(inst.polygon)], "polygon"
            else:
                seg, shape = _box_poly(*b), "box"
            item = {"image_id": iid, "bbox": b, "area": round(_poly_area(seg), 2), "iscrowd": 0, "part": fr.part,
                    "review_state": fr.state if kept else "rejected", "predicted_damage": f.damage,
                    "predicted_part": f.part, "c_refined": f.c_refined, "case": case.public_id, "finding": f.id,
                    "model_version": version, "shape": shape, "instance": inst.id, "photo": photo.public_id,
                    "score": inst.score}
            if kept:
                anns.append({"id": len(anns) + 1, "category_id": cat[fr.damage], "segmentation": [seg], **item})
            else:
                negs.append({"id": len(negs) + 1, "category_id": cat[f.damage], "segmentation": [seg], **item})
        for d, ph in session.execute(select(AddedDamage, Photo).join(Photo, Photo.id == AddedDamage.photo_id)
                                     .where(AddedDamage.case_id == case.id).order_by(AddedDamage.id)).all():
            iid, sx, sy = image_of(ph)
            b = scaled(sx, sy, d.bbox_xywh)
            if d.polygon:
                seg = [[round(v * (sx if i % 2 == 0 else sy), 2) for i, v in enumerate(d.polygon)]]
            else:
                seg = [_box_poly(*b)]
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat[d.damage], "segmentation": seg,
                         "bbox": b, "area": round(b[2] * b[3], 2), "iscrowd": 0, "part": d.part,
                         "review_state": "added", "case": case.public_id, "added": d.public_id,
                         "shape": "polygon" if d.polygon else "box"})
    if damage_names is None:
        from ...data.taxonomy import get_taxonomy

        taxonomy, damage_names = "damage_type", list(get_taxonomy("damage_type").classes)
    data = {"info": {"description": "carcheck reviewed cases", "taxonomy": taxonomy,
                     "images": "original photos" if originals else "privacy-blurred derivatives"},
            "images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(damage_names)],
            "negatives": negs}
    path = out / "annotations.json"
    tmp = path.with_name(f".annotations.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
    return {"annotations": str(path), "images": len(images), "annotations_count": len(anns),
            "negatives": len(negs), "cases": len(cases), "taxonomy": taxonomy}
