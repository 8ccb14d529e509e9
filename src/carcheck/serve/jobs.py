"""The durable job queue (a table of the service database) and the assessment workers.

Queue protocol (the same SQL on SQLite and PostgreSQL):

- :func:`enqueue` adds a ``queued`` job; a partial unique index allows one queued/running job per case.
- :func:`claim`: a worker takes the oldest job that is ``queued`` or ``running`` with an expired
  lease, by compare-and-set on ``(status, lease_token)``: the ``UPDATE`` matches only if nobody
  claimed it since it was read, so two workers never both win. The winner holds a new random
  ``lease_token`` until ``lease_expires_at`` and renews it (:func:`renew`) every lease/4 s while it works.
- :func:`complete` / :func:`fail` count only with the token the worker claimed with: a worker
  that was presumed dead (its lease expired, another worker re-claimed the job) and finishes
  late changes nothing. The report, the case's status, its findings and the audit event are
  written in the same transaction as the job's ``done``: a case completes exactly once.
- A worker killed mid-job (kill -9) or a server restart loses nothing: the lease expires and
  another worker runs the job again (``attempts`` counts the claims; after ``max_attempts`` the
  job fails, so a photo that crashes every worker cannot loop forever).
- Callbacks: a finished job of a case with a ``callback_url`` is ``callback_state=pending``; idle
  workers POST it (JSON) and retry with exponential backoff until a 2xx or ``callback_max_attempts``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .db.models import AuditEvent, Case, Finding, Job, Photo, utcnow
from .settings import Settings

__all__ = ["enqueue", "claim", "renew", "complete", "fail", "due_callbacks", "deliver_callback", "Worker",
           "Supervisor", "worker_main"]

log = logging.getLogger("carcheck.serve.jobs")


def enqueue(session: Session, case: Case, actor: str, max_attempts: int = 3) -> Job:
    """Queue an assessment of ``case`` (caller commits). Raises IntegrityError if one is active."""
    job = Job(case_id=case.id, status="queued", max_attempts=max_attempts)
    session.add(job)
    case.status = "queued"
    session.flush()
    session.add(AuditEvent(tenant_id=case.tenant_id, case_id=case.id, actor=actor, action="job.queued",
                           detail={"job": job.public_id}))
    return job


def claim(session: Session, owner: str, lease_seconds: float) -> tuple[Job, str] | None:
    """Claim the oldest runnable job for ``owner``; returns ``(job, lease_token)`` or None (commits)."""
    now = utcnow()
    candidates = session.execute(
        select(Job.id, Job.status, Job.lease_token, Job.attempts, Job.max_attempts)
        .where((Job.status == "queued") | ((Job.status == "running") & (Job.lease_expires_at < now)))
        .order_by(Job.id).limit(8)).all()
    for jid, status, token, attempts, max_attempts in candidates:
        same = Job.lease_token.is_(None) if token is None else Job.lease_token == token
        if attempts >= max_attempts:  # its workers died every time: fail it, once
            res = session.execute(update(Job).where(Job.id == jid, Job.status == status, same).values(
                status="failed", lease_token=None, finished_at=now,
                error=f"gave up after {attempts} attempt(s): the worker stopped (killed or crashed) each time"))
            if res.rowcount == 1:
                _finish_case(session, jid, "failed", owner)
            continue
        new = secrets.token_hex(16)
        res = session.execute(update(Job).where(Job.id == jid, Job.status == status, same).values(
            status="running", lease_token=new, lease_owner=owner, attempts=Job.attempts + 1, started_at=now,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds)))
        if res.rowcount == 1:
            job = session.get(Job, jid, populate_existing=True)
            case = session.get(Case, job.case_id)
            case.status = "running"
            session.add(AuditEvent(tenant_id=case.tenant_id, case_id=case.id, actor=f"worker:{owner}",
                                   action="job.claimed", detail={"job": job.public_id, "attempt": job.attempts,
                                                                 "reclaimed": status == "running"}))
            session.commit()
            return job, new
    session.commit()
    return None


def renew(session: Session, job_id: int, token: str, lease_seconds: float) -> bool:
    """Extend the lease; False when the worker no longer holds it (commits)."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.lease_token == token, Job.status == "running")
                          .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds)))
    session.commit()
    return res.rowcount == 1


def _finish_case(session: Session, job_id: int, status: str, owner: str) -> None:
    job = session.get(Job, job_id, populate_existing=True)
    case = session.get(Case, job.case_id)
    case.status = status
    if case.callback_url:
        job.callback_state, job.callback_next_at = "pending", utcnow()
    session.add(AuditEvent(tenant_id=case.tenant_id, case_id=case.id, actor=f"worker:{owner}",
                           action=f"job.{'completed' if status == 'assessed' else 'failed'}",
                           detail={"job": job.public_id, "attempt": job.attempts, "error": job.error}))
    session.commit()


def complete(session: Session, job_id: int, token: str, owner: str, report: dict, html_rel: str | None) -> bool:
    """Record the finished assessment (report, case status, findings, audit) if ``token`` still holds
    the job; False (nothing written) otherwise."""
    now = utcnow()
    res = session.execute(update(Job).where(Job.id == job_id, Job.lease_token == token, Job.status == "running")
                          .values(status="done", finished_at=now, lease_expires_at=None, error=None))
    if res.rowcount != 1:
        session.rollback()
        return False
    job = session.get(Job, job_id, populate_existing=True)
    case = session.get(Case, job.case_id)
    case.report_json, case.report_html, case.report_job_id = report, html_rel, job.id
    session.execute(delete(Finding).where(Finding.case_id == case.id))
    for i, f in enumerate(report.get("findings", [])):
        session.add(Finding(case_id=case.id, job_id=job.id, index=i, part=f["part"], damage=f["damage"],
                            size_class=f["size_class"], c_refined=f["c_refined"], needs_review=f["needs_review"],
                            review_state="pending", data=f))
    _finish_case(session, job_id, "assessed", owner)
    return True


def fail(session: Session, job_id: int, token: str, owner: str, error: str) -> bool:
    """An attempt raised: queue the job again, or fail it (and its case) after ``max_attempts``."""
    job = session.get(Job, job_id, populate_existing=True)
    final = job.attempts >= job.max_attempts
    res = session.execute(update(Job).where(Job.id == job_id, Job.lease_token == token, Job.status == "running")
                          .values(status="failed" if final else "queued", lease_token=None, lease_expires_at=None,
                                  error=error[:2000], finished_at=utcnow() if final else None))
    if res.rowcount != 1:
        session.rollback()
        return False
    if final:
        _finish_case(session, job_id, "failed", owner)
    else:
        case = session.get(Case, job.case_id)
        case.status = "queued"
        session.commit()
    return True


# ---------------------------------------------------------------------------------------------- callbacks
def due_callbacks(session: Session, limit: int = 10) -> list[int]:
    """Ids of jobs whose callback is due now."""
    return list(session.scalars(select(Job.id).where(Job.callback_state == "pending", Job.callback_next_at <= utcnow())
                                .order_by(Job.callback_next_at).limit(limit)))


def deliver_callback(session: Session, job_id: int, settings: Settings, client=None) -> str | None:
    """Try to POST one job's callback (claimed by compare-and-set on its attempt count, so one worker
    sends each attempt). Returns the new callback state, or None when another worker took it."""
    import httpx

    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.callback_state != "pending":
        session.rollback()
        return None
    n = job.callback_attempts
    timeout = settings.callback_timeout_seconds
    res = session.execute(update(Job).where(Job.id == job_id, Job.callback_attempts == n,
                                            Job.callback_state == "pending")
                          .values(callback_attempts=n + 1,
                                  callback_next_at=utcnow() + dt.timedelta(seconds=timeout + 5)))
    session.commit()
    if res.rowcount != 1:
        return None
    case = session.get(Case, job.case_id)
    payload = {"event": f"case.{case.status}", "case_id": case.public_id, "external_id": case.external_id,
               "job_id": job.public_id, "status": case.status, "case_url": f"/v1/cases/{case.public_id}"}
    error = None
    try:
        r = (client or httpx).post(case.callback_url, json=payload, timeout=timeout,
                                   headers={"User-Agent": "carcheck-callback", "X-Carcheck-Attempt": str(n + 1)})
        if not 200 <= r.status_code < 300:
            error = f"HTTP {r.status_code}"
    except Exception as e:  # noqa: BLE001 - any delivery failure is retried
        error = f"{type(e).__name__}: {e}"[:500]
    if error is None:
        state, next_at = "delivered", None
    elif n + 1 >= settings.callback_max_attempts:
        state, next_at = "failed", None
    else:
        state = "pending"
        next_at = utcnow() + dt.timedelta(seconds=min(300.0, settings.callback_backoff_seconds * 2 ** n))
    session.execute(update(Job).where(Job.id == job_id).values(callback_state=state, callback_next_at=next_at,
                                                               callback_error=error))
    session.add(AuditEvent(tenant_id=case.tenant_id, case_id=case.id, actor="callback",
                           action=f"callback.{'delivered' if error is None else 'error'}",
                           detail={"job": job.public_id, "attempt": n + 1, "error": error}))
    session.commit()
    return state


# ---------------------------------------------------------------------------------------------- worker
def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent (the server) dies, also by kill -9; exit at once
    if the parent died before this ran (``CARCHECK_SERVE_PARENT`` holds the server's pid)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if not _parent_alive():
        os._exit(1)


def _parent_alive() -> bool:
    parent = os.environ.get("CARCHECK_SERVE_PARENT")
    return parent is None or os.getppid() == int(parent)


class Worker:
    """One assessment worker: loads the models once (threads set first), then runs jobs until stopped."""

    def __init__(self, settings: Settings) -> None:
        from .db.session import make_engine, session_factory
        from .storage import PhotoStore

        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.engine = make_engine(settings.url, pool_size=2)
        self.sessions = session_factory(self.engine)
        self.store = PhotoStore(settings.data_dir)
        self.stopping = threading.Event()
        self.threads = settings.worker_threads()
        self.assessor = None

    def load(self) -> None:
        """Set the threads, then load the models (once per worker)."""
        from ..models.runtime import set_threads
        from ..pipeline.assess import Assessor
        from ..schema import AssessConfig

        set_threads(self.threads)
        self.assessor = Assessor(AssessConfig(threads=self.threads, gradcam=self.settings.gradcam))

    def run(self) -> None:
        """Claim and run jobs, deliver due callbacks, until :attr:`stopping` is set."""
        if self.assessor is None:
            self.load()
        log.info("worker %s ready (%d threads)", self.owner, self.threads)
        while not self.stopping.is_set():
            if not _parent_alive():  # where PR_SET_PDEATHSIG does not exist
                log.warning("worker %s: the server is gone, exiting", self.owner)
                return
            with self.sessions() as s:
                got = claim(s, self.owner, self.settings.lease_seconds)
            if got is not None:
                self.run_job(*got)
                continue
            with self.sessions() as s:
                for jid in due_callbacks(s):
                    deliver_callback(s, jid, self.settings)
            self.stopping.wait(self.settings.poll_seconds)

    def run_job(self, job: Job, token: str) -> None:
        """Assess the job's case while renewing its lease; record the outcome if the lease still holds."""
        lost = threading.Event()
        done = threading.Event()

        def heartbeat():
            while not done.wait(self.settings.lease_seconds / 4):
                with self.sessions() as s:
                    if not renew(s, job.id, token, self.settings.lease_seconds):
                        lost.set()
                        return

        hb = threading.Thread(target=heartbeat, daemon=True, name="carcheck-lease")
        hb.start()
        try:
            report, html_rel = self.assess(job, token)
        except Exception as e:  # noqa: BLE001 - one case's failure is recorded, the worker goes on
            log.exception("job %s failed", job.public_id)
            done.set()
            with self.sessions() as s:
                fail(s, job.id, token, self.owner, f"{type(e).__name__}: {e}")
            return
        finally:
            done.set()
            hb.join()
        with self.sessions() as s:
            if lost.is_set() or not complete(s, job.id, token, self.owner, report, html_rel):
                log.warning("job %s: lease lost, result discarded (another worker runs it)", job.public_id)
                return
            for jid in due_callbacks(s):
                deliver_callback(s, jid, self.settings)

    def assess(self, job: Job, token: str) -> tuple[dict, str]:
        """Run the assessment of the job's case on its stored photos; returns (report JSON, report.html
        relative to the data dir). The photos are linked into a work folder as ``<photo id><suffix>``
        (the names the report uses), so no client-chosen name reaches the file system. The photos are
        matched against the tenant's reused-photo index and then indexed (:mod:`.reuse_index`)."""
        import shutil

        from ..report.html import write_report
        from .limits import FORMAT_SUFFIX

        with self.sessions() as s:
            case = s.get(Case, job.case_id)
            photos = list(s.scalars(select(Photo).where(Photo.case_id == case.id, Photo.status == "stored")
                                    .order_by(Photo.id)))
            case_pid, tenant_id = case.public_id, case.tenant_id
        work = self.store.root / "work" / f"{job.public_id}-{token[:8]}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        names = []
        for p in photos:
            name = p.public_id + FORMAT_SUFFIX.get(p.format or "", ".img")
            src = self.store.blob_path(p.sha256)
            try:
                os.link(src, work / name)
            except OSError:
                shutil.copyfile(src, work / name)
            names.append(name)
        out = self.store.report_dir(case_pid, f"{job.public_id}-{token[:8]}")
        cwd = os.getcwd()
        os.chdir(work)  # the report names photos by these relative names (one job at a time per process)
        try:
            from .reuse_index import add_late_matches, tenant_reuse_index

            # reused-photo check against the tenant's other cases (issue 19); the case's photos are indexed,
            # then checked again for cases another worker indexed meanwhile
            self.assessor.reuse_index = index = tenant_reuse_index(self.sessions, tenant_id)
            report, visuals = self.assessor.assess(names, case_pid)
            add_late_matches(index, report)
            write_report(report, visuals, out, self.assessor.part_names, self.assessor.damage_names)
        finally:
            os.chdir(cwd)
            shutil.rmtree(work, ignore_errors=True)
        return report.model_dump(mode="json"), str((out / "report.html").relative_to(self.store.root))


def worker_main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process: ``python -m carcheck.serve.jobs SETTINGS_JSON``."""
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    settings = Settings.model_validate_json(argv[0])
    if settings.worker_nice:
        try:  # the API answers first when assessments fill the cores (p95 of the non-assessment requests)
            os.nice(settings.worker_nice)
        except OSError:
            pass
    w = Worker(settings)
    signal.signal(signal.SIGTERM, lambda *_: w.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: w.stopping.set())
    w.run()


class Supervisor:
    """Starts ``settings.workers`` worker processes and restarts any that dies (checked every second)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: list[subprocess.Popen] = []
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="carcheck-supervisor")

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "carcheck.serve.jobs", self.settings.model_dump_json()],
                                stdin=subprocess.DEVNULL, env={**os.environ, "CARCHECK_SERVE_PARENT": str(os.getpid())})

    def start(self) -> None:
        """Start the workers and the watcher thread."""
        self.procs = [self._spawn() for _ in range(self.settings.workers)]
        self._thread.start()

    def _watch(self) -> None:
        started = {id(p): time.monotonic() for p in self.procs}
        quick_deaths = 0  # workers that died within 30 s of their start, in a row (e.g. models fail to load)
        next_start = 0.0
        while not self._stop.wait(1.0):
            for i, p in enumerate(self.procs):
                if p.poll() is None or self._stop.is_set() or time.monotonic() < next_start:
                    continue
                quick = time.monotonic() - started.get(id(p), 0.0) < 30
                quick_deaths = quick_deaths + 1 if quick else 0
                delay = min(60.0, 2.0 ** quick_deaths) if quick_deaths > 1 else 0.0
                log.warning("worker %d exited with %s; restarting it%s", p.pid, p.returncode,
                            f" in {delay:.0f} s" if delay else "")
                if delay:  # a crash loop backs off instead of spinning
                    next_start = time.monotonic() + delay
                    if self._stop.wait(delay):
                        return
                self.restarts += 1
                self.procs[i] = self._spawn()
                started[id(self.procs[i])] = time.monotonic()

    def status(self) -> dict:
        """What /healthz shows: worker pids, how many are alive, restarts so far."""
        return {"configured": self.settings.workers, "alive": sum(p.poll() is None for p in self.procs),
                "pids": [p.pid for p in self.procs], "restarts": self.restarts,
                "threads_per_worker": self.settings.worker_threads()}

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the workers (a running job finishes its current photo loop... or its lease expires), then kill."""
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    worker_main()
