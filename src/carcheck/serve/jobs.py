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
- Callbacks: a finished job of a case with a ``callback_url`` is ``callback_state=pending`` (committed
  with the result: the outbox row); the server's delivery thread (:mod:`.callbacks`) sends it, never
  the workers, so a receiver that never answers does not hold up the assessment queue.
- A worker gets its settings through the environment (``CARCHECK_WORKER_SETTINGS``, JSON), never its
  command line (``ps`` shows every user the arguments, e.g. a database URL with its password).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .db.models import AuditEvent, Case, Finding, Job, Photo, utcnow
from .settings import Settings

__all__ = ["enqueue", "claim", "renew", "complete", "fail", "prepare_work_dir", "cleanup_work_dirs", "Worker",
           "Supervisor", "worker_main", "SETTINGS_ENV"]

#: the environment variable that carries a worker's settings (JSON)
SETTINGS_ENV = "CARCHECK_WORKER_SETTINGS"

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


# ---------------------------------------------------------------------------------------------- work dirs
WORK_RE = re.compile(r"^(job_[0-9a-f]{20})-([0-9a-f]{8})$")


def prepare_work_dir(root: Path, job_public_id: str, token: str) -> Path:
    """The empty work folder ``WORK/<job>-<token[:8]>`` of one attempt; folders of the job's earlier
    attempts (a worker killed mid-job leaves its folder) are removed first."""
    import shutil

    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob(f"{job_public_id}-*"):
        shutil.rmtree(old, ignore_errors=True)
    folder = work / f"{job_public_id}-{token[:8]}"
    folder.mkdir()
    return folder


def cleanup_work_dirs(root: Path, session: Session) -> list[str]:
    """Remove the work folders of attempts that are not running now (their worker died, or the job
    finished or was claimed again): every ``WORK/<job>-<token>`` whose job is not ``running`` with an
    unexpired lease under that token, and anything else in ``WORK``. Returns the names removed."""
    import shutil

    work = root / "work"
    if not work.is_dir():
        return []
    now = utcnow()
    removed = []
    for d in work.iterdir():
        m = WORK_RE.match(d.name)
        keep = False
        if m:
            row = session.execute(select(Job.status, Job.lease_token, Job.lease_expires_at)
                                  .where(Job.public_id == m.group(1))).first()
            keep = (row is not None and row[0] == "running" and (row[1] or "").startswith(m.group(2))
                    and row[2] is not None and row[2] > now)
        if not keep:
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)
            else:
                d.unlink(missing_ok=True)
            removed.append(d.name)
    session.rollback()
    return removed


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
        """Claim and run jobs until :attr:`stopping` is set (callbacks are the server's delivery thread's)."""
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
        work = prepare_work_dir(self.store.root, job.public_id, token)  # also removes a killed attempt's folder
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
            from .reuse_index import tenant_reuse_index, with_late_matches

            # reused-photo check against the tenant's other cases (issue 19); the case's photos are indexed,
            # then checked again for cases another worker indexed meanwhile
            self.assessor.reuse_index = index = tenant_reuse_index(self.sessions, tenant_id)
            report, visuals = self.assessor.assess(names, case_pid)
            report = with_late_matches(index, report)  # a new report when another worker's case matches
            write_report(report, visuals, out, self.assessor.part_names, self.assessor.damage_names)
        finally:
            os.chdir(cwd)
            shutil.rmtree(work, ignore_errors=True)
        return report.model_dump(mode="json"), str((out / "report.html").relative_to(self.store.root))


def worker_main() -> None:
    """Entry point of a worker process: ``python -m carcheck.serve.jobs`` with the settings (JSON) in the
    environment variable :data:`SETTINGS_ENV` (removed from the environment once read).

    Raises:
        SystemExit(2): the variable is missing.
    """
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # httpx logs full URLs at INFO
    raw = os.environ.pop(SETTINGS_ENV, None)
    if not raw:
        print(f"carcheck worker: {SETTINGS_ENV} is not set (workers are started by carcheck serve)", file=sys.stderr)
        sys.exit(2)
    settings = Settings.model_validate_json(raw)
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
        # the settings (database URL included) travel in the environment, readable by this user only
        # (/proc/PID/environ is 0400), never in argv (/proc/PID/cmdline, what `ps` shows everyone)
        env = {**os.environ, "CARCHECK_SERVE_PARENT": str(os.getpid()), SETTINGS_ENV: self.settings.model_dump_json()}
        return subprocess.Popen([sys.executable, "-m", "carcheck.serve.jobs"], stdin=subprocess.DEVNULL, env=env)

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
