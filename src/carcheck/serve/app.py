"""The FastAPI application (:func:`create_app`) and the ``carcheck serve`` process (:func:`run_server`:
migrations, the worker supervisor, uvicorn)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from fastapi import FastAPI

from .settings import Settings

__all__ = ["create_app", "run_server"]

log = logging.getLogger("carcheck.serve")


@dataclass
class Metrics:
    """The app's own Prometheus registry (one per app, so tests can build several apps)."""

    registry: object
    requests: object
    latency: object
    jobs: object
    cases: object


def _metrics() -> Metrics:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry()
    return Metrics(
        reg,
        Counter("carcheck_http_requests_total", "HTTP requests answered", ["method", "route", "status"], registry=reg),
        Histogram("carcheck_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=reg,
                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10)),
        Gauge("carcheck_jobs", "Assessment jobs by status (from the database)", ["status"], registry=reg),
        Gauge("carcheck_cases", "Cases by status (from the database)", ["status"], registry=reg))


class MetricsMiddleware:
    """Counts every answer and its latency by method, route template and status."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.m = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def _send(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.m.requests.labels(scope["method"], route, str(status[0])).inc()
            self.m.latency.labels(scope["method"], route).observe(time.perf_counter() - t0)


def create_app(settings: Settings | None = None, engine=None,
               worker_status: Callable[[], dict] | None = None, migrate: bool = True) -> FastAPI:
    """The service as an ASGI app (no workers: :func:`run_server` starts those).

    Args:
        settings: configuration (default: :class:`Settings` defaults).
        engine: a SQLAlchemy engine (default: one for ``settings.url``).
        worker_status: what /healthz reports about the workers.
        migrate: run the Alembic migrations to head first.
    """
    from .auth import RateLimiter
    from .db.session import make_engine, session_factory, upgrade
    from .errors import install_error_handlers
    from .limits import BodyLimitMiddleware
    from .storage import PhotoStore
    from .api import assessments, cases, compare, ops, review

    settings = settings or Settings()
    store = PhotoStore(settings.data_dir)
    engine = engine or make_engine(settings.url)
    if migrate:
        upgrade(engine)
    from .. import __version__

    app = FastAPI(title="carcheck", version=__version__, docs_url="/docs", openapi_url="/openapi.json",
                  description="Vehicle damage assessment from photos: cases, photos, assessments (async jobs), reports.")
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.store = store
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    app.state.worker_status = worker_status
    app.state.metrics = _metrics()
    install_error_handlers(app)
    app.include_router(cases.router)
    app.include_router(assessments.router)
    app.include_router(ops.router)
    app.include_router(review.router)  # issue 18: /v1 review API + the /review UI
    app.include_router(compare.router)  # issue 19: /v1/cases/{id}/compare/{before_id} (+ compare.html)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def run_server(settings: Settings) -> None:
    """``carcheck serve``: migrate, start ``settings.workers`` worker processes (restarted when they
    die), serve the API with uvicorn until SIGINT/SIGTERM, then stop the workers.

    Workers die with the server (Linux: ``PR_SET_PDEATHSIG``), also when it is killed with -9; their
    jobs' leases then expire and the next server's workers pick them up.
    """
    import uvicorn

    from .db.session import make_engine, upgrade
    from .jobs import Supervisor

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.url)
    upgrade(engine)
    sup = Supervisor(settings)
    app = create_app(settings, engine=engine, worker_status=sup.status, migrate=False)
    sup.start()
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=5)
    finally:
        sup.stop()
