"""The review decisions and the reviewed state of a case (shared by the browser UI and the /v1 API).

Every decision writes three things in one transaction: the finding's current reviewed state
(``finding_reviews``, and ``findings.review_state``), an append-only ``review_decisions`` row and an
``audit_events`` row, both with the actor, the time and ``before`` -> ``after``.

Rules:
    * only an ``assessed`` case is reviewed, and only while its review is open (``in_review``);
      ``case reviewed`` closes it (409 afterwards);
    * damage types and parts must be classes of the report's taxonomies (parts also ``unassigned``);
    * a finding is ``corrected`` when its damage type or part differs from the prediction,
      ``confirmed`` when confirmed as predicted, ``rejected``; closing the case needs a decision on
      every finding flagged for review, and records the others as ``accepted`` (left as stated by a
      reviewer who had the case open);
    * a decision may name damage instances of the finding it rejects (report schema >= 1.14,
      ``rejected_instances``: ``<photo id>:<instance id>``, each an instance of that finding, 422
      otherwise); rejecting the finding rejects all its instances, and a kept finding keeps at least one
      (rejecting every instance is rejecting the finding: 422).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.models import AuditEvent, Case, Finding, Photo, utcnow
from ...schema import CaseReport
from ..errors import ApiError
from ..reports import stored_report
from .media import finding_instances, instance_key, report_photos
from .models import AddedDamage, CaseReview, FindingReview, ReviewDecision
from .schemas import AddDamageIn, AddedDamageOut, AuditEventOut, CaseReviewState, FindingDecisionIn, FindingReviewOut

__all__ = ["Actor", "model_version", "case_taxonomy", "decide_finding", "add_damage", "close_case", "review_state",
           "case_audit", "decided_states"]

#: findings.review_state (the service's column) for each reviewed state
_SERVICE_STATE = {"pending": "pending", "confirmed": "confirmed", "corrected": "edited", "rejected": "rejected",
                  "accepted": "pending"}


@dataclass(frozen=True)
class Actor:
    """Who decides: audit text (``user:<id>`` or ``key:<prefix>``) and the reviewer's id, if a person."""

    text: str
    reviewer_id: int | None = None


def model_version(report: CaseReport | None) -> str | None:
    """The model version a report's findings come from: carcheck's version and the first 12 hex
    digits of the SHA-256 of each segmenter file (the networks that make the findings)."""
    if report is None:
        return None
    segs = [m.sha256[:12] for m in report.model_files if m.role == "segmenter"]
    return f"carcheck {report.carcheck_version or '?'} seg {'+'.join(segs) or '?'}"


def case_taxonomy(report: CaseReport) -> tuple[list[str], list[str]]:
    """(damage types, parts) a reviewer may choose for this report (parts include ``unassigned``)."""
    from ...data.taxonomy import get_taxonomy

    tax = report.taxonomies
    damage = list(get_taxonomy(tax.get("damage", "damage_type")).classes)
    parts = list(get_taxonomy(tax.get("parts", "dsmlr_parts")).classes) + ["unassigned"]
    return damage, parts


def _open_review(session: Session, case: Case) -> CaseReview:
    if case.status != "assessed" or case.report_json is None:
        raise ApiError(409, "not_assessed", f"case {case.public_id} is {case.status}: only an assessed case is reviewed",
                       {"status": case.status})
    rv = session.scalar(select(CaseReview).where(CaseReview.case_id == case.id))
    if rv is None:
        rv = CaseReview(case_id=case.id, job_id=case.report_job_id, state="in_review")
        session.add(rv)
        session.flush()
    elif rv.job_id != case.report_job_id:  # re-assessed since: a new review of the new report
        rv.job_id, rv.state, rv.reviewed_at, rv.reviewed_by = case.report_job_id, "in_review", None, None
    if rv.state == "reviewed":
        raise ApiError(409, "case_reviewed", f"case {case.public_id} was marked reviewed at "
                       f"{rv.reviewed_at.isoformat()}: its review is closed", {"reviewed_by": rv.reviewed_by})
    return rv


def _check_names(report: CaseReport, damage: str | None, part: str | None) -> None:
    damages, parts = case_taxonomy(report)
    if damage is not None and damage not in damages:
        raise ApiError(422, "invalid_damage", f"damage type {damage!r} is not one of {', '.join(damages)}")
    if part is not None and part not in parts:
        raise ApiError(422, "invalid_part", f"part {part!r} is not one of {', '.join(parts)}")


def _state_dict(fr: FindingReview | None, f: Finding) -> dict[str, Any]:
    if fr is None:
        return {"state": "pending", "damage": f.damage, "part": f.part, "severity": None, "note": None,
                "rejected_instances": []}
    return {"state": fr.state, "damage": fr.damage, "part": fr.part, "severity": fr.severity, "note": fr.note,
            "rejected_instances": list(fr.rejected_instances or [])}


def _rejected_instances(names: list[str] | None, keys: list[str], before: dict, state: str, f: Finding) -> list[str]:
    """The finding's rejected instances after a decision (``keys``: all its instances, in order).

    Raises:
        ApiError(422): a name that is not an instance of the finding, or every instance rejected while the
            finding is kept.
    """
    foreign = [n for n in names or [] if n not in keys]
    if foreign:
        raise ApiError(422, "invalid_instance", f"rejected_instances: {', '.join(map(repr, foreign))} "
                       f"{'is' if len(foreign) == 1 else 'are'} not an instance of finding {f.id} (its instances: "
                       f"{', '.join(keys) or 'none'})", {"field": "rejected_instances", "instances": keys})
    if state == "rejected":
        return list(keys)
    if names is None:
        return [] if before["state"] == "rejected" else before["rejected_instances"]
    if keys and set(names) >= set(keys):
        raise ApiError(422, "invalid_instance", f"rejected_instances: every instance of finding {f.id} is rejected: "
                       "reject the finding instead", {"field": "rejected_instances", "instances": keys})
    return [k for k in keys if k in set(names)]


def _record(session: Session, case: Case, actor: Actor, action: str, before, after, finding: Finding | None = None,
            extra: dict | None = None) -> None:
    version = model_version(stored_report(case))
    session.add(ReviewDecision(tenant_id=case.tenant_id, case_id=case.id, finding_id=finding.id if finding else None,
                               job_id=finding.job_id if finding else case.report_job_id,
                               finding_index=finding.index if finding else None, reviewer_id=actor.reviewer_id,
                               actor=actor.text, action=action, before=before, after=after,
                               c_refined=finding.c_refined if finding else None, model_version=version))
    detail = {"finding": finding.id if finding else None, "before": before, "after": after, **(extra or {})}
    session.add(AuditEvent(tenant_id=case.tenant_id, case_id=case.id, actor=actor.text, action=f"review.{action}",
                           detail=detail))


def _finding(session: Session, case: Case, finding_id: int) -> Finding:
    f = session.scalar(select(Finding).where(Finding.id == finding_id, Finding.case_id == case.id))
    if f is None:
        raise ApiError(404, "not_found", f"finding {finding_id} not found in case {case.public_id}")
    return f


def decide_finding(session: Session, case: Case, finding_id: int, body: FindingDecisionIn, actor: Actor) -> dict:
    """Apply one decision to a finding of ``case``'s current report; returns the state after it
    (the caller commits).

    Raises:
        ApiError: 404 finding not in the case, 409 case not assessed or its review closed,
            422 a damage type or part outside the report's taxonomies, or rejected instances that are not
            the finding's (or all of them while the finding is kept).
    """
    _open_review(session, case)
    f = _finding(session, case, finding_id)
    _check_names(stored_report(case), body.damage, body.part)
    fr = session.scalar(select(FindingReview).where(FindingReview.finding_id == f.id))
    before = _state_dict(fr, f)
    after = dict(before)
    for k in ("damage", "part", "severity", "note"):
        v = getattr(body, k)
        if v is not None:
            after[k] = (v.strip() or None) if k == "note" else v
    changed = after["damage"] != f.damage or after["part"] != f.part
    if body.action == "reject":
        after["state"] = "rejected"
    elif body.action == "confirm" or changed:
        after["state"] = "corrected" if changed else "confirmed"
    elif before["state"] == "corrected":  # an edit back to the prediction
        after["state"] = "confirmed"
    keys = [instance_key(p, i) for p, i in finding_instances(f.data, report_photos(session, case))]
    after["rejected_instances"] = _rejected_instances(body.rejected_instances, keys, before, after["state"], f)
    if fr is None:
        fr = FindingReview(finding_id=f.id, case_id=case.id, state=after["state"], damage=after["damage"],
                           part=after["part"], actor=actor.text)
        session.add(fr)
    fr.state, fr.damage, fr.part = after["state"], after["damage"], after["part"]
    fr.severity, fr.note, fr.actor, fr.updated_at = after["severity"], after["note"], actor.text, utcnow()
    fr.rejected_instances = after["rejected_instances"] or None
    f.review_state = _SERVICE_STATE[after["state"]]
    _record(session, case, actor, body.action, before, after, f)
    return after


def add_damage(session: Session, case: Case, body: AddDamageIn, actor: Actor) -> AddedDamage:
    """Record damage the model missed; the box is clipped to the photo (the caller commits).

    Raises:
        ApiError: 404 photo not a stored photo of the case, 409 as :func:`decide_finding`,
            422 unknown damage type / part, or a box with no area inside the photo.
    """
    _open_review(session, case)
    _check_names(stored_report(case), body.damage, body.part)
    photo = session.scalar(select(Photo).where(Photo.case_id == case.id, Photo.public_id == body.photo_id,
                                               Photo.status == "stored"))
    if photo is None:
        raise ApiError(404, "not_found", f"photo {body.photo_id!r} not found in case {case.public_id}")
    x, y, w, h = body.bbox_xywh
    W, H = float(photo.width or 0), float(photo.height or 0)
    x0, y0 = max(0.0, min(x, W)), max(0.0, min(y, H))
    x1, y1 = max(0.0, min(x + w, W)), max(0.0, min(y + h, H))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ApiError(422, "invalid_box", f"box {body.bbox_xywh} has no area inside the {W:.0f}x{H:.0f} photo")
    box = [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)]
    poly = None
    if body.polygon:
        poly = [round(max(0.0, min(v, W if i % 2 == 0 else H)), 1) for i, v in enumerate(body.polygon)]
    note = (body.note or "").strip() or None
    d = AddedDamage(case_id=case.id, photo_id=photo.id, damage=body.damage, part=body.part, bbox_xywh=box,
                    polygon=poly, severity=body.severity, note=note, actor=actor.text)
    session.add(d)
    session.flush()
    after = {"id": d.public_id, "photo": photo.public_id, "damage": d.damage, "part": d.part, "bbox_xywh": box,
             "polygon": poly, "severity": d.severity, "note": note}
    _record(session, case, actor, "add_damage", None, after)
    return d


def decided_states() -> tuple[str, ...]:
    """Reviewed states that count as a decision."""
    return ("confirmed", "corrected", "rejected", "accepted")


def close_case(session: Session, case: Case, actor: Actor) -> CaseReview:
    """Mark the case reviewed: every finding flagged for review must have a decision; the other
    undecided findings are recorded as ``accepted`` (the caller commits).

    Raises:
        ApiError(409): undecided flagged findings (listed in ``detail``), or as :func:`decide_finding`.
    """
    rv = _open_review(session, case)
    rows = session.execute(select(Finding, FindingReview).outerjoin(FindingReview, FindingReview.finding_id == Finding.id)
                           .where(Finding.case_id == case.id).order_by(Finding.index)).all()
    open_flagged = [f.id for f, fr in rows if f.needs_review and (fr is None or fr.state not in decided_states())]
    if open_flagged:
        raise ApiError(409, "findings_pending", f"{len(open_flagged)} finding(s) flagged for review have no decision "
                       "yet", {"findings": open_flagged})
    accepted = []
    for f, fr in rows:
        if fr is None or fr.state == "pending":
            before = _state_dict(fr, f)
            after = {**before, "state": "accepted"}
            if fr is None:
                fr = FindingReview(finding_id=f.id, case_id=case.id, state="accepted", damage=f.damage, part=f.part,
                                   actor=actor.text)
                session.add(fr)
            fr.state, fr.actor, fr.updated_at = "accepted", actor.text, utcnow()
            _record(session, case, actor, "accept", before, after, f)
            accepted.append(f.id)
    rv.state, rv.reviewed_at, rv.reviewed_by = "reviewed", utcnow(), actor.text
    counts = _counts(session, case)
    _record(session, case, actor, "case_reviewed", {"state": "in_review"}, {"state": "reviewed", "counts": counts},
            extra={"accepted": accepted})
    return rv


def _counts(session: Session, case: Case) -> dict[str, int]:
    n = dict(session.execute(select(FindingReview.state, func.count()).where(FindingReview.case_id == case.id)
                             .group_by(FindingReview.state)).all())
    total = session.scalar(select(func.count(Finding.id)).where(Finding.case_id == case.id)) or 0
    out = {s: int(n.get(s, 0)) for s in ("confirmed", "corrected", "rejected", "accepted")}
    out["pending"] = total - sum(out.values()) + int(n.get("pending", 0))
    out["added"] = session.scalar(select(func.count(AddedDamage.id)).where(AddedDamage.case_id == case.id)) or 0
    return out


def review_state(session: Session, case: Case) -> CaseReviewState:
    """The reviewed state of the case's current report: every finding as predicted and as reviewed,
    the added damage, counts, open/closed."""
    if case.status != "assessed" or case.report_json is None:
        return CaseReviewState(state="not_assessed")
    rv = session.scalar(select(CaseReview).where(CaseReview.case_id == case.id))
    closed = rv is not None and rv.job_id == case.report_job_id and rv.state == "reviewed"
    findings = []
    photos = report_photos(session, case)
    for f, fr in session.execute(select(Finding, FindingReview)
                                 .outerjoin(FindingReview, FindingReview.finding_id == Finding.id)
                                 .where(Finding.case_id == case.id).order_by(Finding.index)).all():
        s = _state_dict(fr, f)
        findings.append(FindingReviewOut(
            id=f.id, index=f.index, state=s["state"], damage=s["damage"], part=s["part"], severity=s["severity"],
            note=s["note"], actor=fr.actor if fr else None, updated_at=fr.updated_at.isoformat() if fr else None,
            predicted={k: f.data.get(k) for k in ("part", "damage", "size_class", "c_refined", "needs_review",
                                                 "review_reasons")},
            instances=[instance_key(p, i) for p, i in finding_instances(f.data, photos)],
            rejected_instances=s["rejected_instances"]))
    added = [AddedDamageOut(id=d.public_id, photo_id=pid, damage=d.damage, part=d.part, bbox_xywh=d.bbox_xywh,
                            polygon=d.polygon, severity=d.severity, note=d.note, actor=d.actor,
                            created_at=d.created_at.isoformat())
             for d, pid in session.execute(select(AddedDamage, Photo.public_id).join(Photo, Photo.id == AddedDamage.photo_id)
                                           .where(AddedDamage.case_id == case.id).order_by(AddedDamage.id)).all()]
    return CaseReviewState(state="reviewed" if closed else "in_review",
                           reviewed_at=rv.reviewed_at.isoformat() if closed and rv.reviewed_at else None,
                           reviewed_by=rv.reviewed_by if closed else None,
                           model_version=model_version(stored_report(case)),
                           findings=findings, added=added, counts=_counts(session, case))


def case_audit(session: Session, case: Case) -> list[AuditEventOut]:
    """The case's audit events, oldest first."""
    return [AuditEventOut(id=e.id, at=e.at.isoformat(), actor=e.actor, action=e.action, detail=e.detail)
            for e in session.scalars(select(AuditEvent).where(AuditEvent.case_id == case.id).order_by(AuditEvent.id))]
