"""Unversioned operations endpoints: ``/healthz`` (liveness + database + workers) and ``/metrics``
(Prometheus text format: request counts and latencies of this server, queue depth from the database).
Neither needs a key: bind the service to loopback or a private network (the default host is 127.0.0.1)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select, text

from ... import __version__
from ..db.models import Case, Job

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz(request: Request):
    """200 ``{"status": "ok", ...}`` when the database answers; 503 otherwise."""
    state = request.app.state
    body = {"status": "ok", "version": __version__, "database": state.engine.dialect.name}
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - health reports any failure
        body.update(status="unavailable", error=f"database: {type(e).__name__}")
        return JSONResponse(body, status_code=503)
    if state.worker_status is not None:
        body["workers"] = state.worker_status()
    return body


@router.get("/metrics")
def metrics(request: Request):
    """Prometheus metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    m = request.app.state.metrics
    with request.app.state.sessions() as s:
        jobs = dict(s.execute(select(Job.status, func.count(Job.id)).group_by(Job.status)).all())
        cases = dict(s.execute(select(Case.status, func.count(Case.id)).group_by(Case.status)).all())
    for st in ("queued", "running", "done", "failed"):
        m.jobs.labels(st).set(jobs.get(st, 0))
    for st in ("open", "queued", "running", "assessed", "failed"):
        m.cases.labels(st).set(cases.get(st, 0))
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
