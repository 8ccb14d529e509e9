"""Server-rendered review pages: ``/login``, ``/logout``, ``/review`` (the queue) and
``/review/cases/{id}`` (one case), their form posts, and the images they show.

Login makes a server-side session (:mod:`carcheck.serve.review.accounts`); its cookie is HttpOnly,
SameSite=Strict, and Secure when the page is served over https. Every form carries the session's
CSRF token and every POST checks it (403 without it); the login form, before any session exists,
uses a double-submit token (cookie + hidden field). A reviewer sees only the tenant's cases: another
tenant's case answers 404, as a missing one. Pages send a Content-Security-Policy that allows only
the package's own script and styles (no inline script, nothing from elsewhere).

Logins are throttled (:mod:`carcheck.serve.review.throttle`: 429 with Retry-After, no argon2 work
spent on a throttled attempt). Form values are validated: a bad value re-renders the case page with
the error (422), never a 500; ids in paths and queries are bounded (422 beyond).
"""

from __future__ import annotations

import hmac
import math
import secrets
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from pydantic import ValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import and_, case as sql_case, exists, func, select
from sqlalchemy.orm import Session

from ..db.models import Case, Finding, Photo
from ..deps import RowIdPath, RowIdQuery, get_session
from ..errors import ApiError
from ..reports import stored_report
from ..review import accounts, logic, throttle
from ..review.media import crop_path, finding_boxes, overlay_path, photo_shapes, report_photos
from ..review.models import CaseReview, FindingReview, SEVERITIES
from ..review.schemas import AddDamageIn, FindingDecisionIn

__all__ = ["router", "COOKIE"]

router = APIRouter(include_in_schema=False)

COOKIE = "carcheck_session"
LOGIN_CSRF = "carcheck_login_csrf"
STATIC = Path(__file__).with_name("static")
CSP = ("default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

_env = Environment(loader=PackageLoader("carcheck.serve.ui", "templates"), autoescape=select_autoescape(["html"]))


def _html(_name: str, _status: int = 200, **ctx) -> HTMLResponse:
    r = HTMLResponse(_env.get_template(_name).render(**ctx), status_code=_status)
    r.headers["Content-Security-Policy"] = CSP
    r.headers["X-Frame-Options"] = "DENY"
    r.headers["X-Content-Type-Options"] = "nosniff"
    r.headers["Referrer-Policy"] = "same-origin"
    r.headers["Cache-Control"] = "no-store"
    return r


def _user(request: Request, session: Session) -> accounts.ReviewUser | None:
    return accounts.session_user(session, request.cookies.get(COOKIE))


def _need_user(request: Request, session: Session) -> accounts.ReviewUser:
    user = _user(request, session)
    if user is None:
        raise ApiError(401, "unauthorized", "log in at /login first")
    return user


def _csrf(user: accounts.ReviewUser, token: str | None) -> None:
    if not accounts.check_csrf(user, token):
        raise ApiError(403, "csrf", "the form's CSRF token is missing or wrong: reload the page and try again")


def _case(session: Session, user: accounts.ReviewUser, case_id: str) -> Case:
    case = session.scalar(select(Case).where(Case.public_id == case_id, Case.tenant_id == user.tenant_id))
    if case is None:
        raise ApiError(404, "not_found", f"case {case_id!r} not found", {"case_id": case_id})
    return case


def _actor(user: accounts.ReviewUser) -> logic.Actor:
    return logic.Actor(user.actor, user.id)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


# ------------------------------------------------------------------ login / logout
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, error: str | None = None, _status: int = 200) -> HTMLResponse:
    """The login form (with a double-submit CSRF token)."""
    token = secrets.token_urlsafe(32)
    r = _html("login.html", _status, csrf=token, error=error)
    r.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                 path="/login", max_age=3600)
    return r


@router.post("/login")
def login(request: Request, email: str = Form(..., max_length=320), password: str = Form(..., max_length=1000),
          csrf_token: str = Form(""), session: Session = Depends(get_session)):
    """Check the password (argon2), open a session, set its cookie and go to the queue. Throttled
    (429 + Retry-After, password not checked) after too many failures of the account or the client."""
    cookie = request.cookies.get(LOGIN_CSRF) or ""
    if not csrf_token or not hmac.compare_digest(csrf_token, cookie):
        raise ApiError(403, "csrf", "the login form's CSRF token is missing or wrong: reload /login")
    settings = request.app.state.settings
    who = throttle.normalize_email(email)
    client = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(session, settings, who, client)
    if wait is None:
        user = accounts.authenticate(session, email, password)
        if user is None:
            wait = throttle.record_failure(session, settings, who, client)
            session.commit()
            if wait is None:
                return login_page(request, error="Wrong e-mail or password.")
            # this failure reached the limit: answered like the throttled attempts that follow it
    else:
        throttle.record_throttled(session, who, client, wait)
        session.commit()
        user = None
    if user is None:
        r = login_page(request, error=f"Too many failed logins: try again in {math.ceil(wait / 60)} minute(s).",
                       _status=429)
        r.headers["Retry-After"] = str(wait)
        return r
    throttle.clear_account(session, who)
    token = accounts.open_session(session, user)
    session.commit()
    r = RedirectResponse("/review", status_code=303)
    r.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                 max_age=accounts.SESSION_HOURS * 3600, path="/")
    r.delete_cookie(LOGIN_CSRF, path="/login")
    return r


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form(""), session: Session = Depends(get_session)):
    """End the session (CSRF-checked)."""
    user = _need_user(request, session)
    _csrf(user, csrf_token)
    accounts.close_session(session, user)
    session.commit()
    r = _to_login()
    r.delete_cookie(COOKIE, path="/")
    return r


# ------------------------------------------------------------------ the queue
QUEUE_STATUSES = ("to_review", "reviewed", "all")


@router.get("/review", response_class=HTMLResponse)
def queue(request: Request, status: str = "to_review", damage: str = "", session: Session = Depends(get_session)):
    """Assessed cases with findings for review, oldest first; filters: review status and damage type."""
    user = _user(request, session)
    if user is None:
        return _to_login()
    if status not in QUEUE_STATUSES:
        status = "to_review"
    flagged = exists().where(Finding.case_id == Case.id, Finding.needs_review.is_(True))
    reviewed = and_(CaseReview.state == "reviewed", CaseReview.job_id == Case.report_job_id)
    q = (select(Case, CaseReview).outerjoin(CaseReview, CaseReview.case_id == Case.id)
         .where(Case.tenant_id == user.tenant_id, Case.status == "assessed", flagged))
    if status == "to_review":
        q = q.where(~func.coalesce(reviewed, False))
    elif status == "reviewed":
        q = q.where(reviewed)
    if damage:
        q = q.where(exists().where(Finding.case_id == Case.id, Finding.damage == damage))
    rows = session.execute(q.order_by(Case.created_at, Case.id).limit(500)).all()
    ids = [c.id for c, _ in rows]
    counts = {}
    if ids:
        for cid, n, nr in session.execute(select(Finding.case_id, func.count(Finding.id),
                                                 func.sum(sql_case((Finding.needs_review.is_(True), 1), else_=0)))
                                          .where(Finding.case_id.in_(ids)).group_by(Finding.case_id)):
            counts[cid] = [n, int(nr or 0), 0]
        for cid, n in session.execute(select(FindingReview.case_id, func.count(FindingReview.id))
                                      .where(FindingReview.case_id.in_(ids), FindingReview.state != "pending")
                                      .group_by(FindingReview.case_id)):
            counts.setdefault(cid, [0, 0, 0])[2] = n
    damages = sorted({d for (d,) in session.execute(select(Finding.damage).join(Case, Case.id == Finding.case_id)
                                                     .where(Case.tenant_id == user.tenant_id).distinct())})
    items = [{"case": c, "reviewed": bool(rv and rv.state == "reviewed" and rv.job_id == c.report_job_id),
              "verdict": _verdict(c),
              "n": counts.get(c.id, [0, 0, 0])} for c, rv in rows]
    return _html("queue.html", user=user, items=items, status=status, damage=damage, damages=damages,
                 statuses=QUEUE_STATUSES)


def _verdict(case) -> str:
    """The queue's verdict line of a case: its stored report's summary validated as ``CaseSummary`` ('' without
    a report), or a note that it is invalid (the queue still lists the case; its page, which validates the
    whole report, answers the full error). The queue lists up to 500 cases, so it reads only this part."""
    from ...schema import CaseSummary

    data = case.report_json
    if data is None:
        return ""
    try:
        return CaseSummary.model_validate(data.get("summary") if isinstance(data, dict) else None).verdict
    except ValidationError:
        return "stored report invalid (open the case for the error)"


# ------------------------------------------------------------------ one case
def _next_pending(state, after_id: int | None) -> int | None:
    """The next finding (after ``after_id``, wrapping) without a decision, flagged ones first."""
    fs = state.findings
    if not fs:
        return None
    start = next((i + 1 for i, f in enumerate(fs) if f.id == after_id), 0)
    order = fs[start:] + fs[:start]
    for want_flag in (True, False):
        for f in order:
            if f.state == "pending" and bool(f.predicted.get("needs_review")) == want_flag:
                return f.id
    return None


@router.get("/review/cases/{case_id}", response_class=HTMLResponse)
def case_page(case_id: str, request: Request, sel: RowIdQuery = None, session: Session = Depends(get_session)):
    """The case: summary, photos with toggleable overlays, boxes and damage instances (numbered outlines),
    findings with crops and reasons, decision forms (keep / reject each instance), add damage, case reviewed."""
    user = _user(request, session)
    if user is None:
        return _to_login()
    return _case_html(session, user, case_id, sel)


def _case_html(session: Session, user: accounts.ReviewUser, case_id: str, sel: int | None,
               form_error: str | None = None, status: int = 200) -> HTMLResponse:
    """The case page (``form_error``: shown above it, with HTTP ``status``)."""
    case = _case(session, user, case_id)
    state = logic.review_state(session, case)
    report = stored_report(case)  # validated: 500 report_invalid, naming the case, if the stored one is not
    photos = report_photos(session, case) if report is not None else []
    fdata = {f.id: f.data for f in session.scalars(select(Finding).where(Finding.case_id == case.id))}
    boxes, crops, instances = photo_shapes(state, fdata, photos)
    if sel is None or all(f.id != sel for f in state.findings):
        sel = _next_pending(state, None) or (state.findings[0].id if state.findings else None)
    damages, parts = logic.case_taxonomy(report) if report is not None else ([], [])
    names = {p.public_id: p.filename for p, _ in photos}
    diagram = None
    if report is not None:
        from ...report.diagram import car_diagram_svg, part_states

        diagram = car_diagram_svg(part_states(report))
    return _html("case.html", status, user=user, case=case, report=report, state=state, photos=photos, boxes=boxes,
                 crops=crops, instances=instances, sel=sel, damages=damages, parts=parts, severities=SEVERITIES, names=names,
                 closed=state.state == "reviewed", diagram=diagram, form_error=form_error)


def _form_error(e: Exception) -> str:
    """A form's error as one line for the page."""
    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if not isinstance(x, int)) or "form"
            parts.append(f"{where}: {err.get('msg')}")
        return "Not saved: " + "; ".join(parts)
    if isinstance(e, ApiError):
        return f"Not saved: {e.message}"
    return "Not saved: invalid form values"


def _number(name: str, v: str) -> float:
    """A finite number from a form field.

    Raises:
        ValueError: not a number, or NaN / infinite.
    """
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{name}: not a finite number")
    return x


def _back(case_id: str, sel: int | None = None, anchor: str | None = None) -> RedirectResponse:
    url = f"/review/cases/{case_id}"
    if sel is not None:
        url += "?" + urlencode({"sel": sel})
    if anchor:
        url += f"#{anchor}"
    return RedirectResponse(url, status_code=303)


def _opt(v: str | None) -> str | None:
    v = (v or "").strip()
    return v or None


@router.post("/review/cases/{case_id}/findings/{finding_id}")
def post_decision(case_id: str, finding_id: RowIdPath, request: Request, csrf_token: str = Form(""),
                  action: str = Form(""), damage: str = Form(""), part: str = Form(""), severity: str = Form(""),
                  note: str = Form(""), instance: list[str] = Form([]), kept: list[str] = Form([]),
                  session: Session = Depends(get_session)):
    """A decision from the page's forms; back to the case with the next undecided finding selected
    (a bad value: the page again with the error, 422; a closed review: 409). The confirm form lists the
    finding's damage instances (``instance``) and those left checked (``kept``): the others are rejected."""
    user = _need_user(request, session)
    _csrf(user, csrf_token)
    case = _case(session, user, case_id)
    try:
        rejected = [k for k in instance if k not in set(kept)] if instance else None
        body = FindingDecisionIn(action=action, damage=_opt(damage), part=_opt(part), severity=_opt(severity),
                                 note=note if note.strip() or action == "edit" else None, rejected_instances=rejected)
        logic.decide_finding(session, case, finding_id, body, _actor(user))
    except (ValidationError, ApiError) as e:
        if isinstance(e, ApiError) and e.status not in (409, 422):
            raise
        session.rollback()
        return _case_html(session, user, case_id, finding_id, _form_error(e),
                          e.status if isinstance(e, ApiError) else 422)
    session.commit()
    state = logic.review_state(session, case)
    nxt = finding_id if action == "edit" else (_next_pending(state, finding_id) or finding_id)
    return _back(case_id, nxt, f"f-{nxt}")


@router.post("/review/cases/{case_id}/damages")
def post_damage(case_id: str, request: Request, csrf_token: str = Form(""), photo_id: str = Form(""),
                damage: str = Form(""), part: str = Form(""), x: str = Form(""), y: str = Form(""),
                w: str = Form(""), h: str = Form(""), polygon: str = Form(""), severity: str = Form(""),
                note: str = Form(""), session: Session = Depends(get_session)):
    """Add damage drawn on a photo (box in original-photo px; polygon as ``x1,y1,x2,y2,...``); a bad
    value: the page again with the error (422)."""
    user = _need_user(request, session)
    _csrf(user, csrf_token)
    case = _case(session, user, case_id)
    try:
        try:
            box = [_number(k, v) for k, v in (("x", x), ("y", y), ("w", w), ("h", h))]
            poly = None
            if polygon.strip():
                poly = [_number("polygon", v) for v in polygon.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ApiError(422, "invalid_box", "the box (x, y, w, h) and the polygon (x1,y1,x2,y2,...) must be "
                           "finite numbers") from None
        body = AddDamageIn(photo_id=photo_id, damage=damage, part=part, bbox_xywh=box, polygon=poly,
                           severity=_opt(severity), note=_opt(note))
        logic.add_damage(session, case, body, _actor(user))
    except (ValidationError, ApiError) as e:
        if isinstance(e, ApiError) and e.status not in (409, 422):
            raise
        session.rollback()
        return _case_html(session, user, case_id, None, _form_error(e), e.status if isinstance(e, ApiError) else 422)
    session.commit()
    return _back(case_id, anchor="photos")


@router.post("/review/cases/{case_id}/complete")
def post_complete(case_id: str, request: Request, csrf_token: str = Form(""), session: Session = Depends(get_session)):
    """Case reviewed: close it and go back to the queue."""
    user = _need_user(request, session)
    _csrf(user, csrf_token)
    case = _case(session, user, case_id)
    logic.close_case(session, case, _actor(user))
    session.commit()
    return RedirectResponse("/review", status_code=303)


# ------------------------------------------------------------------ images and static files
def _image(path: Path | None) -> Response:
    if path is None or not path.is_file():
        raise ApiError(404, "not_found", "no such image")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600",
                                                                "X-Content-Type-Options": "nosniff"})


def _photo(session: Session, case: Case, photo_id: str) -> Photo:
    p = session.scalar(select(Photo).where(Photo.case_id == case.id, Photo.public_id == photo_id,
                                           Photo.status == "stored"))
    if p is None:
        raise ApiError(404, "not_found", f"photo {photo_id!r} not found")
    return p


@router.get("/review/cases/{case_id}/photos/{photo_id}/{kind}.jpg")
def photo_image(case_id: str, photo_id: str, kind: str, request: Request, session: Session = Depends(get_session)):
    """``photo``: the privacy-blurred derivative; ``parts`` / ``damage``: the report's overlay images."""
    user = _need_user(request, session)
    case = _case(session, user, case_id)
    p = _photo(session, case, photo_id)
    store = request.app.state.store
    if kind == "photo":
        return _image(store.derivative(p.sha256))
    return _image(overlay_path(store, session, case, p, kind))


@router.get("/review/cases/{case_id}/findings/{finding_id}/crop.jpg")
def finding_crop(case_id: str, finding_id: RowIdPath, request: Request, session: Session = Depends(get_session)):
    """The finding's largest detection, cropped from the blurred photo."""
    user = _need_user(request, session)
    case = _case(session, user, case_id)
    f = session.scalar(select(Finding).where(Finding.id == finding_id, Finding.case_id == case.id))
    if f is None:
        raise ApiError(404, "not_found", f"finding {finding_id} not found")
    fb = finding_boxes(f.data, report_photos(session, case))
    if not fb:
        raise ApiError(404, "not_found", "the finding has no box")
    photo, box, _ = fb[0]
    return _image(crop_path(request.app.state.store, case, photo, box, f"{f.id}"))


_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


@router.get("/review/static/{name}")
def static(name: str):
    """The UI's own script and styles (vendored in the package; no CDN)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in _STATIC_TYPES or not path.is_file():
        raise ApiError(404, "not_found", "no such file")
    return FileResponse(path, media_type=_STATIC_TYPES[path.suffix], headers={"Cache-Control": "max-age=600"})
