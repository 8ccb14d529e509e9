"""Faults: ``kill -9`` of a worker mid-job and of the whole server mid-job, then a restart: every
case completes exactly once (asserted from the database: one job per case, done; one
``job.completed`` audit event; one set of findings; the killed jobs were claimed again after their
lease expired). Real ``carcheck serve`` processes, real assessments. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from carcheck.serve.db.models import AuditEvent, Case, Finding, Job  # noqa: E402
from carcheck.serve.db.session import make_engine, session_factory, sqlite_url  # noqa: E402
from support.harness import ServerProcess, create_key_cli, pid_alive, small_photos  # noqa: E402
from conftest import data_path  # noqa: E402

N_CASES = 6


def _state(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return [ln.strip() for ln in f if ln.startswith(("State", "PPid"))]
    except OSError as e:
        return str(e)


def _running_job(S, exclude=(), timeout=60.0):
    """(job id, worker pid) of a job a worker is running now (not one of ``exclude``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with S() as s:
            row = s.execute(select(Job.id, Job.lease_owner).where(Job.status == "running", Job.id.not_in(exclude))
                            .order_by(Job.id)).first()
        if row is not None:
            return row[0], int(row[1].rsplit(":", 1)[1])
        time.sleep(0.05)
    raise AssertionError("no job started running")


def test_kill9_worker_and_server_every_case_once(tmp_path, database_url):
    photos = small_photos(sorted(data_path("car_damage/coco_car_damage_lplenka/val").glob("*.jpg"))[:3],
                          tmp_path / "photos", 480)
    data = tmp_path / "data"
    key = create_key_cli(data, "acme", database_url)
    S = session_factory(make_engine(database_url or sqlite_url(data)))
    args = ["--threads-per-worker", "1", "--lease-seconds", "4"]
    srv = ServerProcess(data, database_url, workers=2, args=args, log=tmp_path / "serve1.log")
    srv2 = None
    try:
        srv.start()
        c = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        cases = []
        for i in range(N_CASES):
            cid = c.post("/v1/cases", json={"external_id": f"f{i}"}).json()["id"]
            r = c.post(f"/v1/cases/{cid}/photos", files=[("files", (p.name, p.read_bytes(), "image/jpeg"))
                                                          for p in photos])
            assert [o["status"] for o in r.json()] == ["stored"] * 3
            assert c.post(f"/v1/cases/{cid}/assessments").status_code == 202
            cases.append(cid)
        # 1. kill -9 a worker in the middle of its job; the supervisor starts a new one
        job1, pid1 = _running_job(S)
        os.kill(pid1, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and srv.health()["workers"]["restarts"] < 1:
            time.sleep(0.2)
        h = srv.health()
        assert h["workers"]["restarts"] == 1 and pid1 not in h["workers"]["pids"]
        # 2. kill -9 the server while a job runs: its workers die with it
        job2, pid2 = _running_job(S, exclude=(job1,))
        pids = srv.health()["workers"]["pids"]
        srv.kill9()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.1)
        assert not any(pid_alive(p) for p in pids), ("workers outlived their server",
                                                     {p: _state(p) for p in pids})
        with S() as s:
            assert s.get(Job, job2).status == "running"  # left mid-job, its lease still held
        # 3. restart: the abandoned jobs are claimed again after their leases expire, all finish
        srv2 = ServerProcess(data, database_url, workers=2, args=args, log=tmp_path / "serve2.log").start()
        c2 = httpx.Client(base_url=srv2.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            st = [c2.get(f"/v1/cases/{cid}").json()["status"] for cid in cases]
            if all(s in ("assessed", "failed") for s in st):
                break
            time.sleep(0.5)
        assert st == ["assessed"] * N_CASES, (st, srv2.log_tail())
    finally:
        srv.stop()
        if srv2 is not None:
            srv2.stop()
    with S() as s:
        for cid in cases:
            case = s.scalar(select(Case).where(Case.public_id == cid))
            jobs = list(s.scalars(select(Job).where(Job.case_id == case.id)))
            assert len(jobs) == 1 and jobs[0].status == "done", [(j.status, j.attempts) for j in jobs]
            assert case.report_job_id == jobs[0].id and case.report_json["case_id"] == cid
            completed = s.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.case_id == case.id,
                                                                        AuditEvent.action == "job.completed"))
            assert completed == 1
            n_find = s.scalar(select(func.count(Finding.id)).where(Finding.case_id == case.id))
            assert n_find == len(case.report_json["findings"])
        for jid in (job1, job2):  # each killed job ran again and finished
            job = s.get(Job, jid)
            assert job.status == "done" and job.attempts >= 2, (jid, job.attempts)
            reclaimed = [e for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "job.claimed"))
                         if e.detail["job"] == job.public_id and e.detail["reclaimed"]]
            assert reclaimed
        assert s.scalar(select(func.count(Job.id)).where(Job.status != "done")) == 0
