"""Security against a real ``carcheck serve`` process (issue 28): three callback receivers of tenant B that
accept the connection and never answer; meanwhile tenant A's requests are timed (p95 under 0.5 s, no 5xx).
The same run checks that callback URLs reach the server's log without their query string, that a work
folder left by a killed attempt is removed at start, and that the data dir is private. The assessments
are recorded by this process through the job queue's own functions (claim, complete: what a worker does),
so no models are loaded; the server's delivery thread sends the callbacks from those committed rows.
On SQLite and (CARCHECK_TEST_POSTGRES_URL) PostgreSQL."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import select  # noqa: E402

from carcheck.serve.db.models import Job  # noqa: E402
from carcheck.serve.db.session import make_engine, session_factory, sqlite_url  # noqa: E402

from support.harness import ServerProcess, create_key_cli  # noqa: E402
from test_service_api import REPORT, jpeg_bytes  # noqa: E402

TOKEN = "s3cr3t-t0ken"


class Hanging:
    """A TCP listener that accepts connections and never reads or answers them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


class Failing:
    """A receiver that answers 500 at once."""

    def __init__(self) -> None:
        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                self.send_response(500)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_hanging_receivers_do_not_stall_another_tenant(tmp_path, database_url):
    from carcheck.serve.jobs import claim, complete

    from carcheck.serve.auth import create_key
    from carcheck.serve.db.session import open_database

    data = tmp_path / "data"
    key_a = create_key_cli(data, "tenant-a", database_url)  # the CLI makes the data dir (0700) and database
    with open_database(data, database_url)() as s:  # the second key in process: one CLI start less
        key_b = create_key(s, "tenant-b")
        s.commit()
    stale = data / "work" / "job_0123456789abcdef0123-deadbeef"  # left by an attempt killed before this start
    stale.mkdir(parents=True)
    (stale / "photo.jpg").write_bytes(b"x")
    S = session_factory(make_engine(database_url or sqlite_url(data)))
    hangs = [Hanging() for _ in range(3)]
    failing = Failing()
    args = ["--allow-callback-host", "127.0.0.1", "--callback-timeout", "10", "--rate-limit", "1000",
            "--rate-burst", "1000"]
    try:
        with ServerProcess(data, database_url, workers=0, args=args, log=tmp_path / "serve.log") as srv:
            assert not stale.exists()  # removed at start
            b = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key_b}"}, timeout=30)
            urls = [f"http://127.0.0.1:{h.port}/hook?token={TOKEN}" for h in hangs]
            urls.append(f"http://127.0.0.1:{failing.port}/fail?token={TOKEN}")
            for i, url in enumerate(urls):
                cid = b.post("/v1/cases", json={"external_id": f"b{i}", "callback_url": url}).json()["id"]
                b.post(f"/v1/cases/{cid}/photos", files=[("files", ("a.jpg", jpeg_bytes(colour=(i, 1, 1)), "image/jpeg"))])
                assert b.post(f"/v1/cases/{cid}/assessments").status_code == 202
                with S() as s:  # what a worker does when the assessment finishes: the callback is now due
                    job, tok = claim(s, "test:1", 60)
                    assert complete(s, job.id, tok, "test:1", REPORT, None)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sum(len(h.conns) > 0 for h in hangs) < 3:
                time.sleep(0.05)
            # tenant A meanwhile (3 s, less than the 10 s the hanging attempts wait): list, create, read
            a = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key_a}"}, timeout=30)
            lat, codes = [], []
            t_end = time.monotonic() + 3.0
            n = 0
            while time.monotonic() < t_end:
                for method, path, kw in (("GET", "/v1/cases", {}), ("POST", "/v1/cases", {"json": {"external_id": f"a{n}"}})):
                    t0 = time.perf_counter()
                    r = a.request(method, path, **kw)
                    lat.append(time.perf_counter() - t0)
                    codes.append(r.status_code)
                    if method == "POST" and r.status_code == 201:
                        cid = r.json()["id"]
                        t0 = time.perf_counter()
                        codes.append(a.get(f"/v1/cases/{cid}").status_code)
                        lat.append(time.perf_counter() - t0)
                n += 1
            p95 = float(np.percentile(lat, 95))
            print(f"tenant A while 3 receivers hang: {len(lat)} requests, p50 {np.percentile(lat, 50) * 1000:.1f} ms, "
                  f"p95 {p95 * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")
            assert not [c for c in codes if c >= 500], codes
            assert set(codes) <= {200, 201}, set(codes)
            assert p95 < 0.5, p95
            assert [len(h.conns) for h in hangs] == [1, 1, 1], srv.log_tail()  # all three hung through it
            with S() as s:  # still hanging: the measurement ran while they did
                states = sorted((st, n) for st, n in s.execute(select(Job.callback_state, Job.callback_attempts)))
            assert states.count(("pending", 1)) >= 3, states
            # the failing receiver was tried (and logged) meanwhile: URL without its query string
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "/fail" not in srv.log_tail(20000):
                time.sleep(0.1)
            log = srv.log_tail(200000)
            assert f"http://127.0.0.1:{failing.port}/fail: delivery failed: HTTP 5xx" in log, log[-2000:]
            assert TOKEN not in log
            # the data dir stays private
            assert data.stat().st_mode & 0o777 == 0o700
            if database_url is None:
                assert (data / "carcheck.db").stat().st_mode & 0o777 == 0o600
    finally:
        for h in hangs:
            h.close()
        failing.close()
