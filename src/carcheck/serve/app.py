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


#: methods counted under their own name in /metrics; any other is counted as "other" (label values stay bounded)
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Counts every answer and its latency by method (:data:`METRIC_METHODS` or ``other``), route
    template (``unmatched`` for a path no route matched, never the raw path) and status code."""

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
            method = scope["method"] if scope["method"] in METRIC_METHODS else "other"
            code = status[0] if 100 <= status[0] <= 599 else 500
            self.m.requests.labels(method, route, str(code)).inc()
            self.m.latency.labels(method, route).observe(time.perf_counter() - t0)


#: the Content-Security-Policy of an HTML answer that sets none itself: nothing but inline styles and
#: images from the page itself or this server (reports embed their photos as data: URLs); no script
HTML_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'none'; "
            "frame-ancestors 'none'; base-uri 'none'")
#: /docs (only with ``--docs``): Swagger UI's script and styles come from its CDN
DOCS_CSP = ("default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")


class SecurityHeadersMiddleware:
    """Every answer gets ``X-Content-Type-Options: nosniff``; every HTML answer a Content-Security-Policy
    (:data:`HTML_CSP` unless the route set its own) and ``X-Frame-Options: DENY``."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def _send(msg):
            if msg["type"] == "http.response.start":
                headers = [(k, v) for k, v in msg.get("headers", [])]
                names = {k.lower() for k, _ in headers}
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if ctype.startswith(b"text/html"):
                    if b"content-security-policy" not in names:
                        csp = DOCS_CSP if scope.get("path") == "/docs" else HTML_CSP
                        headers.append((b"content-security-policy", csp.encode()))
                    if b"x-frame-options" not in names:
                        headers.append((b"x-frame-options", b"DENY"))
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, _send)


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

    # Swagger UI loads from a CDN: off unless the operator asks for it (carcheck serve --docs); no ReDoc
    app = FastAPI(title="carcheck", version=__version__, docs_url="/docs" if settings.docs else None,
                  redoc_url=None, openapi_url="/openapi.json",
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
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def private_data_dir(data_dir) -> None:
    """Make files created from now on private to this user (umask 077: folders 0700, files 0600; the
    workers inherit it) and the data dir itself 0700."""
    import os

    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)


def run_server(settings: Settings) -> None:
    """``carcheck serve``: umask 077, migrate, remove the work folders of dead attempts, start
    ``settings.workers`` worker processes (restarted when they die) and the callback delivery thread,
    serve the API with uvicorn until SIGINT/SIGTERM, then stop the workers.

    Workers die with the server (Linux: ``PR_SET_PDEATHSIG``), also when it is killed with -9; their
    jobs' leases then expire and the next server's workers pick them up.
    """
    import uvicorn

    from .callbacks import CallbackDispatcher
    from .db.session import make_engine, session_factory, upgrade
    from .jobs import Supervisor, cleanup_work_dirs

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s server %(process)d %(levelname)s %(message)s")
    logging.getLogger("carcheck").setLevel(logging.INFO)
    private_data_dir(settings.data_dir)
    engine = make_engine(settings.url)
    upgrade(engine)
    with session_factory(engine)() as s:
        removed = cleanup_work_dirs(settings.data_dir.resolve(), s)
    if removed:
        log.info("removed %d work folder(s) of attempts that are not running", len(removed))
    sup = Supervisor(settings)
    app = create_app(settings, engine=engine, worker_status=sup.status, migrate=False)
    dispatcher = CallbackDispatcher(app.state.sessions, settings)
    sup.start()
    dispatcher.start()
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=5)
    finally:
        dispatcher.stop()
        sup.stop()
