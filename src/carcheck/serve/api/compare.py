"""``GET /v1/cases/{case_id}/compare/{before_id}``: pickup vs return (or an earlier claim vs this one) of two
assessed cases, from their stored reports (issue 19).

The JSON is the :class:`~carcheck.schema.CompareReport` that ``carcheck compare BEFORE AFTER``
writes to ``compare.json`` (:func:`carcheck.pipeline.compare.compare_cases`): every part new / changed /
not comparable / pre-existing / clean with the reason, and the same-car check across the two cases.
``.../compare.html`` is the side-by-side page (:func:`carcheck.report.compare_html.write_compare`, every
photo privacy-blurred there).

``case_id`` is the after side (return / this claim), ``before_id`` the before side (pickup / earlier claim).
Both must be cases of the caller's tenant: another tenant's case answers 404 as a missing one does (the
answer never says that it exists). A case that is not assessed (open, queued, running, failed) answers 409
``not_assessed``.

The same-car check uses the make/model the two stored reports identified (the method says so: it cannot tell
two cars of one model apart): reports do not store the verification embeddings ``carcheck compare`` uses when
it assesses two folders itself. The comparison reads the reports as assessed, not the reviewers' edits.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..auth import Principal
from ..db.models import Case, Photo
from ..deps import get_principal, get_session
from ..errors import ApiError
from ...schema import CompareReport
from .cases import load_case

__all__ = ["router", "assessed_report", "compare_stored"]

router = APIRouter(prefix="/v1/cases", tags=["compare"])


def assessed_report(case: Case):
    """The stored report of ``case`` (already the caller's, :func:`~.cases.load_case`) as a
    :class:`~carcheck.schema.CaseReport`.

    Raises:
        ApiError: 409 ``not_assessed`` when the case has no current report (open, queued, running, failed).
        StoredReportError: 500 ``report_invalid`` when the stored report is not a valid report.
    """
    from ..reports import stored_report

    if case.status != "assessed" or case.report_json is None:
        raise ApiError(409, "not_assessed", f"case {case.public_id} is {case.status}, not assessed: compare needs "
                       "the reports of two assessed cases (POST /v1/cases/{id}/assessments, then wait for it)",
                       {"case_id": case.public_id, "status": case.status})
    return stored_report(case)


def compare_stored(before, after) -> CompareReport:
    """:func:`carcheck.pipeline.compare.compare_cases` of two stored reports (before, after), each side's
    source being its API path."""
    from ...pipeline.compare import compare_cases

    return compare_cases(before, after, f"/v1/cases/{before.case_id}", f"/v1/cases/{after.case_id}")


def _pair(session: Session, principal: Principal, case_id: str, before_id: str):
    """(before case, before report, after case, after report): 404 when either is not the caller's case
    (checked for both before any 409), then 409 for the first one not assessed."""
    a_case = load_case(session, principal, case_id)
    b_case = load_case(session, principal, before_id)
    after = assessed_report(a_case)
    before = assessed_report(b_case)
    return b_case, before, a_case, after


@router.get("/{case_id}/compare/{before_id}", response_model=CompareReport)
def compare(case_id: str, before_id: str, principal: Principal = Depends(get_principal),
            session: Session = Depends(get_session)) -> CompareReport:
    """Compare this case (after: return / this claim) with ``before_id`` (pickup / earlier claim) part by part:
    new damage, pre-existing, changed, not comparable (not visible in one of the two, said why), clean; and
    whether the two show the same car. The JSON ``carcheck compare`` writes. 404 for a case that is not the
    caller's, 409 for one not assessed."""
    _, before, _, after = _pair(session, principal, case_id, before_id)
    session.close()
    return compare_stored(before, after)


def _images(session: Session, store, case: Case, side: str, paths: set[str]) -> dict[tuple[str, str], object]:
    """``(side, report path)`` -> RGB array of the case's photos the comparison shows. The worker names
    each photo ``<photo id><suffix>`` in the report: looked up by that id within the case only."""
    from ...data.images import ImageLoadError, load_image

    out = {}
    by_id = {Path(p).stem: p for p in paths}
    rows = session.scalars(select(Photo).where(Photo.case_id == case.id, Photo.status == "stored",
                                               Photo.public_id.in_(by_id)))
    for photo in rows:
        try:
            out[(side, by_id[photo.public_id])] = load_image(store.blob_path(photo.sha256),
                                                             max_decoded_pixels=600_000)
        except (ImageLoadError, ValueError):  # a blob gone from the data dir: the page lists the name only
            pass
    return out


@router.get("/{case_id}/compare/{before_id}/compare.html", response_class=FileResponse,
            responses={200: {"content": {"text/html": {}}}})
def compare_html(case_id: str, before_id: str, request: Request, principal: Principal = Depends(get_principal),
                 session: Session = Depends(get_session)):
    """The comparison as ``carcheck compare`` writes ``compare.html``: per part its status and the photos of
    both cases side by side (privacy-blurred). Written once per pair of assessments (a re-assessment of either
    case writes a new page)."""
    from ...report.compare_html import MAX_PHOTOS_PER_CELL, write_compare

    store = request.app.state.store
    b_case, before, a_case, after = _pair(session, principal, case_id, before_id)
    pair = f"{a_case.public_id}-{a_case.report_job_id}--{b_case.public_id}-{b_case.report_job_id}"
    folder = store.root / "compare" / pair  # the job ids: a re-assessment of either side gets a new page
    page = folder / "compare.html"
    if not page.is_file():
        result = compare_stored(before, after)
        shown = {"before": set(), "after": set()}
        for r in result.parts:
            shown["before"].update(r.before_photos[:MAX_PHOTOS_PER_CELL])
            shown["after"].update(r.after_photos[:MAX_PHOTOS_PER_CELL])
        images = {**_images(session, store, b_case, "before", shown["before"]),
                  **_images(session, store, a_case, "after", shown["after"])}
        session.close()
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}-{id(result)}")
        write_compare(result, images, tmp)
        try:
            os.replace(tmp, folder)  # atomic: a concurrent request never sees half a page
        except OSError:  # another request wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    return FileResponse(page, media_type="text/html; charset=utf-8")
