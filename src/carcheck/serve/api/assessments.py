"""``POST /v1/cases/{id}/assessments``: queue an assessment (202, a job); ``GET /v1/jobs/{id}``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..auth import Principal
from ..db.models import Case, Job, Photo
from ..deps import get_principal, get_session
from ..errors import ApiError
from ..jobs import enqueue
from .cases import load_case

router = APIRouter(prefix="/v1", tags=["assessments"])


class JobQueued(BaseModel):
    job_id: str
    status: str


class JobStatus(BaseModel):
    id: str
    case_id: str
    status: str
    attempts: int
    error: str | None
    created_at: str
    finished_at: str | None
    callback_state: str


@router.post("/cases/{case_id}/assessments", status_code=202, response_model=JobQueued)
def create_assessment(case_id: str, request: Request, principal: Principal = Depends(get_principal),
                      session: Session = Depends(get_session)) -> JobQueued:
    """Queue an assessment of the case's stored photos; poll ``GET /v1/cases/{id}`` or wait for the callback.
    409 while one is queued or running (a case is never assessed twice at once) or when no photo is stored."""
    case = load_case(session, principal, case_id, for_update=True)
    active = session.scalar(select(Job).where(Job.case_id == case.id, Job.status.in_(("queued", "running"))))
    if active is not None:
        raise ApiError(409, "already_queued", f"case {case_id} already has a {active.status} assessment",
                       {"job_id": active.public_id, "status": active.status})
    n = session.scalar(select(func.count(Photo.id)).where(Photo.case_id == case.id, Photo.status == "stored"))
    if not n:
        raise ApiError(409, "no_photos", f"case {case_id} has no stored photo to assess")
    try:
        job = enqueue(session, case, principal.actor, request.app.state.settings.job_max_attempts)
        session.commit()
    except IntegrityError:  # the partial unique index: another request queued one in between
        session.rollback()
        raise ApiError(409, "already_queued", f"case {case_id} already has an active assessment") from None
    return JobQueued(job_id=job.public_id, status=job.status)


@router.get("/jobs/{job_id}", response_model=JobStatus)
def get_job(job_id: str, principal: Principal = Depends(get_principal),
            session: Session = Depends(get_session)) -> JobStatus:
    """One assessment job of the caller's tenant."""
    row = session.execute(select(Job, Case.public_id).join(Case, Case.id == Job.case_id)
                          .where(Job.public_id == job_id, Case.tenant_id == principal.tenant_id)).first()
    if row is None:
        raise ApiError(404, "not_found", f"job {job_id!r} not found")
    job, cid = row
    return JobStatus(id=job.public_id, case_id=cid, status=job.status, attempts=job.attempts, error=job.error,
                     created_at=job.created_at.isoformat(),
                     finished_at=job.finished_at.isoformat() if job.finished_at else None,
                     callback_state=job.callback_state)
