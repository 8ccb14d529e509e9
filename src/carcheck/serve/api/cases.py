"""``/v1/cases``: create, list (cursor paging), get (with the report when assessed; its photos paged),
photos (multipart upload, privacy-blurred download) and ``report.html``.

Cursors are opaque to clients: URL-safe base64 of the public id of the page's last item, looked up
within the caller's tenant (a cursor reveals nothing the page did not show, and another tenant's id
is refused as a forged one is: 400 ``bad_cursor``)."""

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
from ..reports import stored_report
from ..storage import safe_filename

router = APIRouter(prefix="/v1/cases", tags=["cases"])


class CaseIn(BaseModel):
    external_id: str = Field(..., min_length=1, max_length=200, description="The caller's claim or inspection id.")
    callback_url: HttpUrl | None = Field(None, max_length=2000, description=(
        "POSTed (JSON, signed: X-Carcheck-Signature) when an assessment of the case finishes. Its host must "
        "resolve to public addresses only (422 callback_url_not_allowed otherwise)."))


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
    report: dict | None = Field(None, description="The report of `carcheck assess` (schema/report.py CaseReport, "
                                                  "validated when read: 500 report_invalid if the stored one is "
                                                  "not) when the case is assessed.")
    report_html_url: str | None = None
    review: dict | None = Field(None, description="The reviewed state of the report (issue 18, "
                                                  "serve/review/schemas.py CaseReviewState) when assessed.")
    photos_next_cursor: str | None = Field(None, description="More photos: pass as photos_cursor (null: no more).")


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


def case_out(session: Session, case: Case, full: bool = True, photos_limit: int = 100,
             photos_after: int | None = None) -> CaseOut:
    """The case as the API shows it; ``full``: with a page of its photos (``photos_limit`` after the
    photo row ``photos_after``), its report and review state."""
    job = session.scalar(select(Job).where(Job.case_id == case.id).order_by(Job.id.desc()).limit(1))
    out = CaseOut(id=case.public_id, external_id=case.external_id, status=case.status,
                  created_at=case.created_at.isoformat(), updated_at=case.updated_at.isoformat(),
                  callback_url=case.callback_url,
                  job=JobOut(id=job.public_id, status=job.status, attempts=job.attempts, error=job.error,
                             callback_state=job.callback_state) if job else None)
    if full:
        q = select(Photo).where(Photo.case_id == case.id)
        if photos_after is not None:
            q = q.where(Photo.id > photos_after)
        rows = list(session.scalars(q.order_by(Photo.id).limit(photos_limit + 1)))
        out.photos = [photo_out(case, p) for p in rows[:photos_limit]]
        if len(rows) > photos_limit:
            out.photos_next_cursor = encode_cursor(rows[photos_limit - 1].public_id)
        if case.status == "assessed" and case.report_json is not None:
            out.report = stored_report(case).model_dump(mode="json")  # validated: 500 report_invalid if not
            from ..review.logic import review_state  # the reviewed state beside the stored report

            out.review = review_state(session, case).model_dump(mode="json")
    if case.report_html:
        out.report_html_url = f"/v1/cases/{case.public_id}/report.html"
    return out


@router.post("", status_code=201, response_model=CaseCreated)
def create_case(body: CaseIn, request: Request, principal: Principal = Depends(get_principal),
                session: Session = Depends(get_session)) -> CaseCreated:
    """Open a case. 422 ``callback_url_not_allowed`` for a callback host that resolves to a loopback,
    private, link-local, multicast or reserved address (unless the server allows that host)."""
    from ..callbacks import CallbackUrlNotAllowed, check_url

    if body.callback_url is not None:  # DNS is looked up here, before any transaction begins
        try:
            check_url(str(body.callback_url), request.app.state.settings.allowed_callback_hosts)
        except CallbackUrlNotAllowed as e:
            raise ApiError(422, "callback_url_not_allowed", str(e)) from None
    case = Case(tenant_id=principal.tenant_id, external_id=body.external_id,
                callback_url=str(body.callback_url) if body.callback_url else None, status="open")
    session.add(case)
    session.flush()
    session.add(AuditEvent(tenant_id=principal.tenant_id, case_id=case.id, actor=principal.actor,
                           action="case.created", detail={"external_id": body.external_id}))
    session.commit()
    return CaseCreated(id=case.public_id, status=case.status)


def encode_cursor(public_id: str) -> str:
    """The opaque cursor after the item ``public_id``."""
    return base64.urlsafe_b64encode(public_id.encode()).decode().rstrip("=")


def decode_cursor(session: Session, cursor: str, model, *where) -> int:
    """The row id of the item a cursor names, among the rows ``where`` selects (the caller's).

    Raises:
        ApiError(400, bad_cursor): not a cursor this API returned (or another tenant's item).
    """
    try:
        if len(cursor) > 100:
            raise ValueError
        public_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        public_id = None
    row_id = session.scalar(select(model.id).where(model.public_id == public_id, *where)) if public_id else None
    if row_id is None:
        raise ApiError(400, "bad_cursor", "cursor is not one this API returned", {"cursor": cursor[:100]})
    return row_id


@router.get("", response_model=CaseList)
def list_cases(status: Literal["open", "queued", "running", "assessed", "failed"] | None = None,
               limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None,
               principal: Principal = Depends(get_principal), session: Session = Depends(get_session)) -> CaseList:
    """The caller's cases, newest first; pass ``next_cursor`` as ``cursor`` for the next page (null: last page)."""
    q = select(Case).where(Case.tenant_id == principal.tenant_id)
    if status:
        q = q.where(Case.status == status)
    if cursor:
        q = q.where(Case.id < decode_cursor(session, cursor, Case, Case.tenant_id == principal.tenant_id))
    rows = list(session.scalars(q.order_by(Case.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return CaseList(items=[case_out(session, c, full=False) for c in rows],
                    next_cursor=encode_cursor(rows[-1].public_id) if more else None)


@router.get("/{case_id}", response_model=CaseOut)
def get_case(case_id: str, photos_limit: Annotated[int, Query(ge=1, le=500)] = 100,
             photos_cursor: Annotated[str | None, Query(max_length=100)] = None,
             principal: Principal = Depends(get_principal), session: Session = Depends(get_session)) -> CaseOut:
    """A case, a page of its photos (``photos_limit``, then ``photos_next_cursor`` as ``photos_cursor``),
    its latest job and (when assessed) its report."""
    case = load_case(session, principal, case_id)
    after = decode_cursor(session, photos_cursor, Photo, Photo.case_id == case.id) if photos_cursor else None
    return case_out(session, case, photos_limit=photos_limit, photos_after=after)


@router.post("/{case_id}/photos", status_code=201, response_model=list[PhotoOut])
def upload_photos(case_id: str, request: Request, files: list[UploadFile] = File(..., description="One or more photos."),
                  principal: Principal = Depends(get_principal),
                  session: Session = Depends(get_session)) -> list[PhotoOut]:
    """Add photos (multipart field ``files``). Each file is ``stored`` or ``rejected`` with the reason
    (too large, case full, not an image, truncated, decompression bomb...); one bad file never stops the others.
    A case records at most ``max_rejected_per_case`` rejected files (later ones are answered, with no id, but
    not recorded); a request with more files than stored + rejected may reach is refused whole (413)."""
    settings, store = request.app.state.settings, request.app.state.store
    most = settings.max_photos_per_case + settings.max_rejected_per_case
    if len(files) > most:
        raise ApiError(413, "too_many_files", f"{len(files)} files in one request; at most {most}",
                       {"limit_files": most})
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
            n_rejected = session.scalar(select(func.count(Photo.id)).where(Photo.case_id == case.id,
                                                                            Photo.status == "rejected"))
            if n_rejected >= settings.max_rejected_per_case:  # answered, not recorded: rows stay bounded
                session.commit()
                out.append(PhotoOut(id=None, filename=name, sha256=checked.sha256, size_bytes=checked.size,
                                    status="rejected", reason=f"{reason}; not recorded: the case already has "
                                    f"{n_rejected} rejected files (limit {settings.max_rejected_per_case})"))
                continue
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
