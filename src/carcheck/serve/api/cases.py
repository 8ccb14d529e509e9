"""``/v1/cases``: create, list (cursor paging), get (with the report when assessed), photos
(multipart upload, privacy-blurred download) and ``report.html``."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, HttpUrl
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..auth import Principal
from ..db.models import AuditEvent, Case, Job, Photo
from ..deps import get_principal, get_session
from ..errors import ApiError
from ..limits import receive_file
from ..storage import safe_filename

router = APIRouter(prefix="/v1/cases", tags=["cases"])


class CaseIn(BaseModel):
    external_id: str = Field(..., min_length=1, max_length=200, description="The caller's claim or inspection id.")
    callback_url: HttpUrl | None = Field(None, description="POSTed (JSON) when an assessment of the case finishes.")


class CaseCreated(BaseModel):
    id: str
    status: str


class PhotoOut(BaseModel):
    id: str | None
    filename: str
    sha256: str | None
    size_bytes: int
    status: Literal["stored", "rejected"]
    reason: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    url: str | None = Field(None, description="The privacy-blurred JPEG of a stored photo.")


class JobOut(BaseModel):
    id: str
    status: str
    attempts: int
    error: str | None = None
    callback_state: str


class CaseOut(BaseModel):
    id: str
    external_id: str
    status: Literal["open", "queued", "running", "assessed", "failed"]
    created_at: str
    updated_at: str
    callback_url: str | None = None
    photos: list[PhotoOut] = []
    job: JobOut | None = None
    report: dict | None = Field(None, description="The report of `carcheck assess` (schema/report.py CaseReport) "
                                                  "when the case is assessed.")
    report_html_url: str | None = None
    review: dict | None = Field(None, description="The reviewed state of the report (issue 18, "
                                                  "serve/review/schemas.py CaseReviewState) when assessed.")


class CaseList(BaseModel):
    items: list[CaseOut]
    next_cursor: str | None


def load_case(session: Session, principal: Principal, case_id: str, for_update: bool = False) -> Case:
    """The caller's case ``case_id`` (404 for another tenant's case, as for a missing one)."""
    q = select(Case).where(Case.public_id == case_id, Case.tenant_id == principal.tenant_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    case = session.scalar(q)
    if case is None:
        raise ApiError(404, "not_found", f"case {case_id!r} not found", {"case_id": case_id})
    return case


def photo_out(case: Case, p: Photo) -> PhotoOut:
    return PhotoOut(id=p.public_id, filename=p.filename, sha256=p.sha256, size_bytes=p.size_bytes, status=p.status,
                    reason=p.reason, format=p.format, width=p.width, height=p.height,
                    url=f"/v1/cases/{case.public_id}/photos/{p.public_id}" if p.status == "stored" else None)


def case_out(session: Session, case: Case, full: bool = True) -> CaseOut:
    job = session.scalar(select(Job).where(Job.case_id == case.id).order_by(Job.id.desc()).limit(1))
    out = CaseOut(id=case.public_id, external_id=case.external_id, status=case.status,
                  created_at=case.created_at.isoformat(), updated_at=case.updated_at.isoformat(),
                  callback_url=case.callback_url,
                  job=JobOut(id=job.public_id, status=job.status, attempts=job.attempts, error=job.error,
                             callback_state=job.callback_state) if job else None)
    if full:
        out.photos = [photo_out(case, p) for p in session.scalars(select(Photo).where(Photo.case_id == case.id)
                                                                   .order_by(Photo.id))]
        if case.status == "assessed" and case.report_json is not None:
            out.report = case.report_json
            from ..review.logic import review_state  # the reviewed state beside the stored report

            out.review = review_state(session, case).model_dump(mode="json")
    if case.report_html:
        out.report_html_url = f"/v1/cases/{case.public_id}/report.html"
    return out


@router.post("", status_code=201, response_model=CaseCreated)
def create_case(body: CaseIn, principal: Principal = Depends(get_principal),
                session: Session = Depends(get_session)) -> CaseCreated:
    """Open a case."""
    case = Case(tenant_id=principal.tenant_id, external_id=body.external_id,
                callback_url=str(body.callback_url) if body.callback_url else None, status="open")
    session.add(case)
    session.flush()
    session.add(AuditEvent(tenant_id=principal.tenant_id, case_id=case.id, actor=principal.actor,
                           action="case.created", detail={"external_id": body.external_id}))
    session.commit()
    return CaseCreated(id=case.public_id, status=case.status)


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"c{last_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("c"):
            raise ValueError
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_cursor", "cursor is not one this API returned", {"cursor": cursor[:100]}) from None


@router.get("", response_model=CaseList)
def list_cases(status: Literal["open", "queued", "running", "assessed", "failed"] | None = None,
               limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None,
               principal: Principal = Depends(get_principal), session: Session = Depends(get_session)) -> CaseList:
    """The caller's cases, newest first; pass ``next_cursor`` as ``cursor`` for the next page (null: last page)."""
    q = select(Case).where(Case.tenant_id == principal.tenant_id)
    if status:
        q = q.where(Case.status == status)
    if cursor:
        q = q.where(Case.id < _decode_cursor(cursor))
    rows = list(session.scalars(q.order_by(Case.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return CaseList(items=[case_out(session, c, full=False) for c in rows],
                    next_cursor=_encode_cursor(rows[-1].id) if more else None)


@router.get("/{case_id}", response_model=CaseOut)
def get_case(case_id: str, principal: Principal = Depends(get_principal),
             session: Session = Depends(get_session)) -> CaseOut:
    """A case, its photos, its latest job and (when assessed) its report."""
    return case_out(session, load_case(session, principal, case_id))


@router.post("/{case_id}/photos", status_code=201, response_model=list[PhotoOut])
def upload_photos(case_id: str, request: Request, files: list[UploadFile] = File(..., description="One or more photos."),
                  principal: Principal = Depends(get_principal),
                  session: Session = Depends(get_session)) -> list[PhotoOut]:
    """Add photos (multipart field ``files``). Each file is ``stored`` or ``rejected`` with the reason
    (too large, case full, not an image, truncated, decompression bomb...); one bad file never stops the others."""
    settings, store = request.app.state.settings, request.app.state.store
    case = load_case(session, principal, case_id)
    if case.status in ("queued", "running"):
        raise ApiError(409, "case_busy", f"case {case_id} is {case.status}: add photos before or after an assessment",
                       {"status": case.status})
    session.commit()  # no lock held while the files are read and decoded
    out = []
    for up in files:
        name = safe_filename(up.filename)
        checked = receive_file(up.file, store, settings.max_file_bytes)
        reason = checked.reason
        photo = None
        # the case row locked (PostgreSQL FOR UPDATE; SQLite: BEGIN IMMEDIATE) while counting and adding
        status = session.scalar(select(Case.status).where(Case.id == case.id).with_for_update())
        if reason is None and status in ("queued", "running"):
            reason = f"case is {status}: photos cannot be added during an assessment"
        if reason is None:
            n, total = session.execute(select(func.count(Photo.id), func.coalesce(func.sum(Photo.size_bytes), 0))
                                       .where(Photo.case_id == case.id, Photo.status == "stored")).one()
            if n >= settings.max_photos_per_case:
                reason = f"case already has {n} photos (limit {settings.max_photos_per_case} per case)"
            elif total + checked.size > settings.max_case_bytes:
                reason = (f"case photos would exceed {settings.max_case_bytes} bytes "
                          f"(limit {settings.max_case_bytes / 2 ** 20:.0f} MiB per case)")
        if reason is None:
            store.put(checked.tmp, checked.sha256)
            photo = Photo(case_id=case.id, filename=name, sha256=checked.sha256, size_bytes=checked.size,
                          status="stored", format=checked.format, width=checked.width, height=checked.height)
        else:
            if checked.tmp is not None:
                checked.tmp.unlink(missing_ok=True)
            photo = Photo(case_id=case.id, filename=name, sha256=checked.sha256, size_bytes=checked.size,
                          status="rejected", reason=reason)
        session.add(photo)
        session.flush()
        session.add(AuditEvent(tenant_id=principal.tenant_id, case_id=case.id, actor=principal.actor,
                               action=f"photo.{photo.status}",
                               detail={"photo": photo.public_id, "sha256": photo.sha256, "reason": reason}))
        session.commit()
        out.append(photo_out(case, photo))
    return out


@router.get("/{case_id}/photos/{photo_id}", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}})
def get_photo(case_id: str, photo_id: str, request: Request, principal: Principal = Depends(get_principal),
              session: Session = Depends(get_session)):
    """The privacy-blurred JPEG of a stored photo (faces and plates blurred; originals are never served)."""
    case = load_case(session, principal, case_id)
    photo = session.scalar(select(Photo).where(Photo.case_id == case.id, Photo.public_id == photo_id))
    session.close()
    if photo is None or photo.status != "stored":
        raise ApiError(404, "not_found", f"photo {photo_id!r} not found in case {case_id}")
    path = request.app.state.store.derivative(photo.sha256)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{case_id}/report.html", response_class=FileResponse, responses={200: {"content": {"text/html": {}}}})
def get_report_html(case_id: str, request: Request, principal: Principal = Depends(get_principal),
                    session: Session = Depends(get_session)):
    """The HTML report of the case's latest assessment (photos privacy-blurred, as ``carcheck assess`` writes it)."""
    case = load_case(session, principal, case_id)
    if not case.report_html:
        raise ApiError(404, "not_assessed", f"case {case_id} has no report yet", {"status": case.status})
    path = request.app.state.store.root / case.report_html
    if not path.is_file():
        raise ApiError(404, "not_found", f"report of case {case_id} is missing from the data dir")
    return FileResponse(path, media_type="text/html; charset=utf-8")
