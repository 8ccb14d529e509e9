"""Everything ``carcheck serve`` can be told, in one validated model (the server passes it to its
workers as JSON in their environment, so server and workers never disagree)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

__all__ = ["Settings"]

MB = 2 ** 20


class Settings(BaseModel):
    """Service configuration.

    Attributes:
        data_dir: folder of the embedded database, the photos (content-addressed), reports and temporary files.
        database_url: SQLAlchemy URL; None -> SQLite (WAL) at ``DATA_DIR/carcheck.db``.
        host / port: where uvicorn listens.
        workers: assessment worker processes (each loads the models once).
        threads_per_worker: torch / ONNX Runtime threads of each worker; None -> cores // workers (at least 1),
            so the workers together never use more threads than there are cores.
        max_file_bytes: larger uploaded files are rejected (bytes).
        max_case_bytes: a file that would take the case's stored photos above this is rejected (bytes).
        max_photos_per_case: stored photos per case; files beyond it are rejected.
        max_request_bytes: a request body larger than this is refused with 413 before it is parsed further.
        rate_limit: requests per second allowed per API key (token bucket, refill rate).
        rate_burst: bucket size (requests a key may send at once).
        lease_seconds: a running job's lease; a worker renews it every lease/4 s, and a job whose lease expired
            (its worker died) is picked up again by another worker.
        job_max_attempts: claims of one job before it is failed (a photo that kills every worker stops here).
        poll_seconds: how often an idle worker looks for work.
        max_rejected_per_case: rejected uploads recorded per case; files rejected beyond it are answered
            (``rejected``, no id) but not stored as rows. A request with more files than
            ``max_photos_per_case + max_rejected_per_case`` is refused whole (413).
        callback_max_attempts / callback_backoff_seconds / callback_timeout_seconds: completion callbacks are
            retried with exponential backoff (backoff * 2**attempt, at most 300 s) up to this many attempts;
            the timeout (seconds) bounds each phase of one attempt (connect at most 5 s, send, wait for
            the status line).
        allowed_callback_hosts: host names or addresses exempt from the callback address policy
            (:mod:`carcheck.serve.callbacks`), e.g. ``127.0.0.1`` for a receiver on the same machine.
        login_max_failures_account / login_max_failures_client / login_window_seconds: the login throttle
            (:mod:`carcheck.serve.review.throttle`): so many failed logins of one account, or from one
            client address, within the window (seconds) and /login answers 429 until the window passes.
        docs: serve Swagger UI at /docs (it loads its script and styles from a CDN); off by default,
            /openapi.json is always served.
        gradcam: Grad-CAM maps of flagged photos in report.html (as ``carcheck assess``).
        worker_nice: the workers' niceness (Unix ``nice``): when assessments fill the cores, the server's
            requests are scheduled first.
    """

    data_dir: Path = Path("carcheck-data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=0)
    threads_per_worker: int | None = Field(None, ge=1)
    max_file_bytes: int = Field(25 * MB, ge=1)
    max_case_bytes: int = Field(200 * MB, ge=1)
    max_photos_per_case: int = Field(50, ge=1)
    max_request_bytes: int = Field(210 * MB, ge=1)
    rate_limit: float = Field(50.0, gt=0)
    rate_burst: int = Field(100, ge=1)
    lease_seconds: float = Field(60.0, gt=0)
    job_max_attempts: int = Field(3, ge=1)
    poll_seconds: float = Field(0.5, gt=0)
    callback_max_attempts: int = Field(6, ge=1)
    callback_backoff_seconds: float = Field(1.0, ge=0)
    callback_timeout_seconds: float = Field(10.0, gt=0)
    max_rejected_per_case: int = Field(50, ge=0)
    allowed_callback_hosts: frozenset[str] = frozenset()
    login_max_failures_account: int = Field(5, ge=1)
    login_max_failures_client: int = Field(20, ge=1)
    login_window_seconds: float = Field(900.0, gt=0)
    docs: bool = False
    gradcam: bool = True
    worker_nice: int = Field(10, ge=0, le=19)

    @property
    def url(self) -> str:
        """The database URL in effect."""
        from .db.session import sqlite_url

        return self.database_url or sqlite_url(self.data_dir)

    def worker_threads(self) -> int:
        """Threads each worker uses (see ``threads_per_worker``)."""
        from ..models.runtime import available_cores

        return self.threads_per_worker or max(1, available_cores() // max(1, self.workers))
