"""Review over the API (issue 18), API-key authenticated like the rest of ``/v1``: every action of the
review UI (decide a finding, add damage, close the case), the reviewed state, the case's audit log,
review statistics with the suggested review threshold, and the COCO export of reviewed cases.

``router`` also carries the browser UI (:mod:`carcheck.serve.ui.pages`: ``/review``, ``/login``), so
``create_app`` registers both with one line."""

from __future__ import annotations

import shutil
import tempfile
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from ..auth import Principal
from ..deps import RowIdPath, get_principal, get_session
from ..review import logic
from ..review.schemas import (AddDamageIn, AddedDamageOut, AuditEventOut, CaseReviewState, FindingDecisionIn,
                              FindingReviewOut, ReviewStats)
from ..ui.pages import router as ui_router
from .cases import load_case

api = APIRouter(prefix="/v1", tags=["review"])


def _actor(p: Principal) -> logic.Actor:
    return logic.Actor(p.actor)


def _finding_out(session: Session, case, finding_id: int) -> FindingReviewOut:
    return next(f for f in logic.review_state(session, case).findings if f.id == finding_id)


@api.get("/cases/{case_id}/review", response_model=CaseReviewState)
def get_review(case_id: str, principal: Principal = Depends(get_principal),
               session: Session = Depends(get_session)) -> CaseReviewState:
    """The reviewed state of the case's current report (each finding as predicted and as reviewed, added damage)."""
    return logic.review_state(session, load_case(session, principal, case_id))


@api.post("/cases/{case_id}/findings/{finding_id}/review", response_model=FindingReviewOut)
def review_finding(case_id: str, finding_id: RowIdPath, body: FindingDecisionIn,
                   principal: Principal = Depends(get_principal),
                   session: Session = Depends(get_session)) -> FindingReviewOut:
    """Confirm, reject or edit (damage type, part, severity, note) one finding; stored with before -> after."""
    case = load_case(session, principal, case_id, for_update=True)
    logic.decide_finding(session, case, finding_id, body, _actor(principal))
    session.commit()
    return _finding_out(session, case, finding_id)


@api.post("/cases/{case_id}/damages", status_code=201, response_model=AddedDamageOut)
def add_damage(case_id: str, body: AddDamageIn, principal: Principal = Depends(get_principal),
               session: Session = Depends(get_session)) -> AddedDamageOut:
    """Add damage the model missed: a box (and optionally a polygon) on a stored photo, with type and part."""
    case = load_case(session, principal, case_id, for_update=True)
    d = logic.add_damage(session, case, body, _actor(principal))
    session.commit()
    return next(a for a in logic.review_state(session, case).added if a.id == d.public_id)


@api.post("/cases/{case_id}/review/complete", response_model=CaseReviewState)
def complete_review(case_id: str, principal: Principal = Depends(get_principal),
                    session: Session = Depends(get_session)) -> CaseReviewState:
    """Mark the case reviewed (409 while a finding flagged for review has no decision)."""
    case = load_case(session, principal, case_id, for_update=True)
    logic.close_case(session, case, _actor(principal))
    session.commit()
    return logic.review_state(session, case)


@api.get("/cases/{case_id}/audit", response_model=list[AuditEventOut])
def get_audit(case_id: str, principal: Principal = Depends(get_principal),
              session: Session = Depends(get_session)) -> list[AuditEventOut]:
    """The case's append-only audit log, oldest first (uploads, jobs, every review decision with before -> after)."""
    return logic.case_audit(session, load_case(session, principal, case_id))


@api.get("/review/stats", response_model=ReviewStats)
def get_stats(target: Annotated[float, Query(gt=0, le=1)] = 0.9,
              min_support: Annotated[int, Query(ge=1, le=1_000_000)] = 20,
              principal: Principal = Depends(get_principal), session: Session = Depends(get_session)) -> ReviewStats:
    """Confirmed / corrected / rejected shares and precision per damage type and model version of the tenant's
    reviewed cases, and per model version the lowest C_refined threshold that reaches ``target`` precision."""
    from ..review.stats import review_stats

    return review_stats(session, principal.tenant_id, target, min_support)


@api.get("/export/coco", response_class=FileResponse, responses={200: {"content": {"application/zip": {}}}})
def export_coco(request: Request, principal: Principal = Depends(get_principal),
                session: Session = Depends(get_session)):
    """The tenant's reviewed cases as a COCO dataset (zip: annotations.json + images/, privacy-blurred photos)."""
    from ..review.export import export_coco as run_export

    store = request.app.state.store
    work = tempfile.mkdtemp(dir=store.root / "tmp", prefix="export-")
    try:
        run_export(session, store, f"{work}/coco", principal.tenant_id)
        session.close()
        archive = shutil.make_archive(f"{work}/reviewed", "zip", f"{work}/coco")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return FileResponse(archive, media_type="application/zip", filename="reviewed-coco.zip",
                        background=BackgroundTask(shutil.rmtree, work, True))


router = APIRouter()
router.include_router(api)
router.include_router(ui_router)
