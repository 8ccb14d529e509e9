"""End to end against a real ``carcheck serve`` process (a free loopback port, /healthz awaited,
always stopped): keys from ``carcheck keys create``, a case with real photos assessed by a real
worker (the shipped models), the report (schema of ``carcheck assess``), report.html, the blurred
photo, the completion callback (retried after a 500, signed with the tenant's secret), metrics; auth
over the wire; the data dir's files private (0700 / 0600). On SQLite and, when
CARCHECK_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from support.harness import ServerProcess, create_key_cli, small_photos  # noqa: E402
from conftest import data_path  # noqa: E402

VAL = "car_damage/coco_car_damage_lplenka/val"


class Hooks:
    """A local callback receiver: answers 500 to the first POST, 200 after; records every body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.raw: list[tuple[str, str, bytes]] = []  # (timestamp, signature, raw body)
        hooks = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["content-length"]))
                body = json.loads(raw)
                hooks.raw.append((self.headers.get("x-carcheck-timestamp"), self.headers.get("x-carcheck-signature"), raw))
                hooks.received.append((self.headers.get("x-carcheck-attempt"), body))
                self.send_response(500 if len(hooks.received) == 1 else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_end_to_end(tmp_path, database_url):
    from carcheck.schema import CaseReport

    photos = small_photos(sorted(data_path(VAL).glob("*.jpg"))[:3], tmp_path / "photos")
    data = tmp_path / "data"
    key = create_key_cli(data, "acme", database_url)
    other = create_key_cli(data, "globex", database_url)
    assert key.startswith("cck_") and key != other
    with Hooks() as hooks, ServerProcess(data, database_url, workers=1,
                                         args=["--threads-per-worker", "2", "--allow-callback-host", "127.0.0.1"]) as srv:
        c = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert httpx.get(srv.url + "/v1/cases").status_code == 401
        assert httpx.get(srv.url + "/v1/cases", headers={"Authorization": "Bearer cck_x_y"}).status_code == 401
        r = c.post("/v1/cases", json={"external_id": "claim-42", "callback_url": hooks.url})
        assert r.status_code == 201 and r.json()["status"] == "open"
        cid = r.json()["id"]
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
        files.append(("files", ("fake.jpg", b"GIF89a-not-really", "image/jpeg")))
        r = c.post(f"/v1/cases/{cid}/photos", files=files)
        assert r.status_code == 201
        assert [o["status"] for o in r.json()] == ["stored"] * 3 + ["rejected"]
        ids = [o["id"] for o in r.json()[:3]]
        assert httpx.get(f"{srv.url}/v1/cases/{cid}", headers={"Authorization": f"Bearer {other}"}).status_code == 404
        r = c.post(f"/v1/cases/{cid}/assessments")
        assert r.status_code == 202 and r.json()["status"] == "queued"
        deadline, seen = time.monotonic() + 120, set()
        while time.monotonic() < deadline:
            case = c.get(f"/v1/cases/{cid}").json()
            seen.add(case["status"])
            if case["status"] in ("assessed", "failed"):
                break
            time.sleep(0.3)
        assert case["status"] == "assessed", (case, srv.log_tail())
        assert seen <= {"queued", "running", "assessed"}
        report = CaseReport.model_validate(case["report"])  # the schema `carcheck assess` writes
        assert report.case_id == cid and report.summary.photos == 3
        assert report.summary.assessed + report.summary.skipped == 3 and report.summary.failed == 0
        assert sorted(p.path.split(".")[0] for p in report.photos) == sorted(ids)  # no client name in the report
        assert report.config.threads == 2
        html = c.get(f"/v1/cases/{cid}/report.html")
        assert html.status_code == 200 and "text/html" in html.headers["content-type"] and cid in html.text
        img = c.get(case["photos"][0]["url"])
        assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"
        assert img.content != photos[0].read_bytes()  # the derivative, not the original
        listed = c.get("/v1/cases", params={"status": "assessed"}).json()["items"]
        assert [x["id"] for x in listed] == [cid]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(hooks.received) < 2:
            time.sleep(0.2)
        assert [a for a, _ in hooks.received] == ["1", "2"], hooks.received  # a 500, retried after backoff
        assert hooks.received[1][1]["case_id"] == cid and hooks.received[1][1]["status"] == "assessed"
        time.sleep(0.5)
        assert c.get(f"/v1/cases/{cid}").json()["job"]["callback_state"] == "delivered"
        # signed with the tenant's secret (made on first use; `carcheck webhooks secret` shows it: test_service_security)
        from sqlalchemy import select

        from carcheck.serve.callbacks import verify_signature
        from carcheck.serve.db.models import Tenant
        from carcheck.serve.db.session import make_engine, session_factory, sqlite_url

        with session_factory(make_engine(database_url or sqlite_url(data)))() as s:
            secret = s.scalar(select(Tenant.webhook_secret).where(Tenant.name == "acme"))
        assert secret and secret.startswith("whsec_")
        assert len(hooks.raw) == 2 and all(verify_signature(secret, ts, sig, raw) for ts, sig, raw in hooks.raw)
        # private files: the data dir 0700, the database, derivatives and the report 0600 (umask 077 at start)
        mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
        assert mode(data) == 0o700
        private = [p for p in data.rglob("*") if p.is_file()]
        assert any(p.name == "report.html" for p in private) and any(p.suffix == ".jpg" for p in private)
        assert not database_url or not any(p.name == "carcheck.db" for p in private)
        assert {str(p.relative_to(data)): oct(mode(p)) for p in private if mode(p) != 0o600} == {}
        assert {str(p.relative_to(data)): oct(mode(p)) for p in data.rglob("*") if p.is_dir() and mode(p) != 0o700} == {}
        m = httpx.get(srv.url + "/metrics").text
        assert 'carcheck_jobs{status="done"} 1.0' in m and "carcheck_http_request_duration_seconds_bucket" in m
        h = srv.health()
        assert h["workers"]["alive"] == 1 and h["database"] == ("postgresql" if database_url else "sqlite")
    assert srv.proc.returncode is not None
    assert not any(_alive(pid) for pid in h["workers"]["pids"])  # the workers stopped with the server


def _alive(pid):
    from support.harness import pid_alive

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.2)
    return pid_alive(pid)


def test_serve_usage_errors(tmp_path):
    import subprocess

    from support.harness import CLI

    r = subprocess.run(CLI + ["serve", "--data-dir", str(tmp_path), "--database-url", "mysql://x/y"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "only sqlite" in r.stderr
    r = subprocess.run(CLI + ["keys", "create", "--tenant", " ", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "tenant name" in r.stderr
