"""Run a real ``carcheck serve`` process for tests and benchmarks: a free port, /healthz wait,
``kill -9`` and clean stops, API keys through the real ``carcheck keys create``.

Always use :class:`ServerProcess` as a context manager (or call :meth:`ServerProcess.stop` in a
``finally``): the server and its workers never outlive the caller.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["free_port", "ServerProcess", "create_key_cli", "CLI", "pid_alive", "postgres_database", "small_photos", "run_load"]

#: the ``carcheck`` console script of this interpreter
CLI = [sys.executable, "-c", "from carcheck.cli import main; main()"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_key_cli(data_dir: str | Path, tenant: str, database_url: str | None = None) -> str:
    """``carcheck keys create --tenant TENANT`` as a subprocess; returns the printed key.

    Raises:
        RuntimeError: with the command's stderr when it fails.
    """
    cmd = CLI + ["keys", "create", "--tenant", tenant, "--data-dir", str(data_dir)]
    if database_url:
        cmd += ["--database-url", database_url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"carcheck keys create failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout.strip().splitlines()[-1]


class ServerProcess:
    """``carcheck serve`` on a free loopback port.

    Args:
        data_dir: the service's data dir.
        database_url: None for SQLite in the data dir.
        workers: worker processes.
        args: more ``carcheck serve`` options.
        log: file receiving the server's (and workers') stdout and stderr.
    """

    def __init__(self, data_dir: str | Path, database_url: str | None = None, workers: int = 1,
                 args: list[str] | None = None, log: str | Path | None = None, port: int | None = None) -> None:
        self.data_dir, self.database_url, self.workers = Path(data_dir), database_url, workers
        self.args = list(args or [])
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log) if log else self.data_dir.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0, wait_workers: bool = True) -> "ServerProcess":
        """Start the server and wait until /healthz answers ok (and every worker is alive)."""
        cmd = CLI + ["serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
                     "--workers", str(self.workers)] + self.args
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_healthy(timeout, wait_workers)
        return self

    def wait_healthy(self, timeout: float = 120.0, wait_workers: bool = True) -> dict:
        """Poll /healthz until it answers ok.

        Raises:
            RuntimeError: the server exited, or ``timeout`` s passed (with the log's tail).
        """
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"carcheck serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(self.url + "/healthz", timeout=2)
                body = r.json()
                if r.status_code == 200 and (not wait_workers or body.get("workers", {}).get("alive") == self.workers):
                    return body
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"carcheck serve not healthy after {timeout} s:\n{self.log_tail()}")

    def health(self) -> dict:
        """The /healthz body."""
        import httpx

        return httpx.get(self.url + "/healthz", timeout=5).json()

    def log_tail(self, n: int = 4000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        """``kill -9`` the server process (its workers die with it: PR_SET_PDEATHSIG)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; also kills any worker left (by the pids /healthz listed)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def postgres_database(admin_url: str):
    """Context manager: a new, empty PostgreSQL database on the server of ``admin_url`` (a
    ``postgresql+psycopg://`` URL whose user may CREATE DATABASE); yields its URL and drops it after."""
    import contextlib
    import secrets as _secrets

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    @contextlib.contextmanager
    def _db():
        name = f"carcheck_test_{_secrets.token_hex(4)}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    return _db()


def small_photos(sources, out_dir: str | Path, longest_side: int = 640) -> list[Path]:
    """JPEG copies of ``sources`` whose longer side is at most ``longest_side`` px (quality 90), for
    tests and benchmarks that should not spend their time decoding large photos."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sources:
        dst = out / (Path(src).stem + ".jpg")
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((longest_side, longest_side))
            im.save(dst, "JPEG", quality=90)
        paths.append(dst)
    return paths


def run_load(url: str, key: str, photos: list[Path], clients: int = 50, photos_per_case: int = 3,
             poll_seconds: float = 0.5, timeout: float = 300.0) -> dict:
    """The load of issue 17: ``clients`` concurrent clients each create a case, upload
    ``photos_per_case`` photos (one request each), queue the assessment and poll the case until it
    is assessed or failed. Runs on one asyncio loop (httpx.AsyncClient, one connection per client).

    Returns:
        a JSON-able dict: requests, requests_per_s, wall_s, latency percentiles (ms) of the
        non-assessment requests (all but POST .../assessments) overall and while at least one
        assessment was queued or running (``busy``), status counts, 5xx count, cases assessed,
        failed and lost (no final status before ``timeout``), cases without a report.
    """
    import asyncio

    import httpx
    import numpy as np

    blobs = [(p.name, p.read_bytes()) for p in photos]
    log: list[tuple[str, float, float, int]] = []  # (kind, start, seconds, status)
    outcome: dict[str, str] = {}
    queued_at: list[float] = []
    done_at: list[float] = []

    async def call(client, kind, method, path, **kw):
        t = time.perf_counter()
        try:
            r = await client.request(method, path, **kw)
            status = r.status_code
        except httpx.HTTPError:
            r, status = None, 599
        log.append((kind, t, time.perf_counter() - t, status))
        return r

    async def one(i: int, client) -> None:
        r = await call(client, "create", "POST", "/v1/cases", json={"external_id": f"load-{i}"})
        if r is None or r.status_code != 201:
            outcome[f"client-{i}"] = "create failed"
            return
        cid = r.json()["id"]
        outcome[cid] = "lost"
        for k in range(photos_per_case):
            name, data = blobs[(i * photos_per_case + k) % len(blobs)]
            await call(client, "upload", "POST", f"/v1/cases/{cid}/photos", files=[("files", (name, data, "image/jpeg"))])
        r = await call(client, "assess", "POST", f"/v1/cases/{cid}/assessments")
        if r is None or r.status_code != 202:
            outcome[cid] = "not queued"
            return
        queued_at.append(time.perf_counter())
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            await asyncio.sleep(poll_seconds)
            r = await call(client, "poll", "GET", f"/v1/cases/{cid}")
            if r is not None and r.status_code == 200 and r.json()["status"] in ("assessed", "failed"):
                body = r.json()
                outcome[cid] = body["status"] if body["status"] == "failed" or body.get("report") else "no report"
                done_at.append(time.perf_counter())
                return

    async def main() -> float:
        limits = httpx.Limits(max_connections=clients + 5, max_keepalive_connections=clients + 5)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60,
                                     limits=limits) as client:
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i, client) for i in range(clients)))
            return time.perf_counter() - t0

    wall = asyncio.run(main())
    busy_from, busy_to = (min(queued_at), max(done_at)) if queued_at and done_at else (0.0, 0.0)

    def pct(rows):
        ms = np.array([d * 1000 for d in rows]) if rows else np.zeros(1)
        return {"n": len(rows), "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(float(ms.max()), 1)}

    non_assess = [(k, t, d, s) for k, t, d, s in log if k != "assess"]
    statuses: dict[str, int] = {}
    for _, _, _, s in log:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    return {
        "clients": clients, "photos": clients * photos_per_case, "requests": len(log),
        "wall_s": round(wall, 2), "requests_per_s": round(len(log) / wall, 1),
        "latency_non_assessment": pct([d for _, _, d, _ in non_assess]),
        "latency_non_assessment_while_busy": pct([d for _, t, d, _ in non_assess if busy_from <= t <= busy_to]),
        "latency_by_kind": {k: pct([d for kk, _, d, _ in log if kk == k]) for k in ("create", "upload", "assess", "poll")},
        "status_counts": statuses, "http_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
        "cases_assessed": sum(v == "assessed" for v in outcome.values()),
        "cases_failed": sum(v == "failed" for v in outcome.values()),
        "cases_lost": sum(v not in ("assessed", "failed") for v in outcome.values()),
        "cases_without_report": sum(v == "no report" for v in outcome.values()),
    }
