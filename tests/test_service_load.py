"""Load on loopback (issue 17): 50 concurrent clients each create a case, upload 3 real photos
(downscaled copies, one request each) and poll until assessed, against a real ``carcheck serve``
with 2 workers of 1 thread (the 2 cores). Every case must get its report; no 5xx; no case lost.
Requests/s and p95 latency are printed (bench/service.py records them). SQLite here,
PostgreSQL in test_service_load_pg.py (one minute each)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from sqlalchemy import func, select  # noqa: E402

from carcheck.serve.db.models import AuditEvent, Case, Job  # noqa: E402
from carcheck.serve.db.session import make_engine, session_factory, sqlite_url  # noqa: E402
from support.harness import ServerProcess, create_key_cli, run_load, small_photos  # noqa: E402
from conftest import data_path  # noqa: E402

CLIENTS = 50


def check_load(tmp_path, database_url):
    """Run the load against a fresh server and assert every case got its report exactly once."""
    photos = small_photos(sorted(data_path("car_damage/coco_car_damage_lplenka/val").glob("*.jpg")),
                          tmp_path / "photos", 320)
    data = tmp_path / "data"
    key = create_key_cli(data, "fleet", database_url)
    args = ["--threads-per-worker", "1", "--rate-limit", "2000", "--rate-burst", "2000", "--no-gradcam"]
    with ServerProcess(data, database_url, workers=2, args=args, log=tmp_path / "serve.log") as srv:
        stats = run_load(srv.url, key, photos, clients=CLIENTS, photos_per_case=3, poll_seconds=2.0, timeout=240)
        log = srv.log_tail()
    print(json.dumps(stats, indent=1))
    assert stats["cases_assessed"] == CLIENTS, (stats, log)
    assert stats["cases_lost"] == 0 and stats["cases_without_report"] == 0 and stats["http_5xx"] == 0, stats
    assert stats["status_counts"].get("201") == CLIENTS * 4 and stats["status_counts"].get("202") == CLIENTS
    S = session_factory(make_engine(database_url or sqlite_url(data)))
    with S() as s:
        assert s.scalar(select(func.count(Case.id)).where(Case.status == "assessed")) == CLIENTS
        assert s.scalar(select(func.count(Job.id)).where(Job.status == "done")) == CLIENTS
        assert s.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "job.completed")) == CLIENTS


def test_load_50_clients_sqlite(tmp_path):
    check_load(tmp_path, None)
