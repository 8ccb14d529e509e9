"""Service security, in process (issue 28; FastAPI TestClient, no workers): the callback URL policy at
creation and again at delivery (DNS rebinding), signed callbacks and the receiver's check from
docs/service-security.md, delivery errors without socket details, key revocation and reviewer
disabling through the CLI, login throttling, bounded /metrics labels, workers' settings out of argv,
numeric path / query / form values, opaque cursors, rejected-upload limits and photo paging, 413 for
chunked bodies, security headers on HTML answers, /docs off, work folders of dead attempts.
The ones where the database matters run on SQLite and (CARCHECK_TEST_POSTGRES_URL) PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from carcheck.serve.app import create_app  # noqa: E402
from carcheck.serve.auth import create_key  # noqa: E402
from carcheck.serve.db.models import AuditEvent, Case, Job, LoginFailure, Photo, utcnow  # noqa: E402
from carcheck.serve.settings import Settings  # noqa: E402
from test_review_support import assessed_case, reviewer  # noqa: E402
from test_service_api import REPORT, assert_error, auth, jpeg_bytes, new_case  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "service-security.md"
PASSWORD = "correct horse battery"


def make(tmp_path, database_url=None, **kw):
    """(TestClient, app, {tenant: key}) with two tenants."""
    kw.setdefault("rate_limit", 1000)
    kw.setdefault("rate_burst", 1000)
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0, **kw))
    keys = {}
    with app.state.sessions() as s:
        for t in ("acme", "globex"):
            keys[t] = create_key(s, t)
        s.commit()
    return TestClient(app), app, keys


def finished_job(client, app, key, ext="cb", **case_kw) -> tuple[str, int]:
    """A case of ``key`` with one photo whose assessment finished (jobs.claim / complete): (case id, job row id)."""
    from carcheck.serve.jobs import claim, complete

    cid = new_case(client, key, ext, **case_kw)
    client.post(f"/v1/cases/{cid}/photos", files=[("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))], headers=auth(key))
    assert client.post(f"/v1/cases/{cid}/assessments", headers=auth(key)).status_code == 202
    with app.state.sessions() as s:
        job, tok = claim(s, "w", 30)
        assert complete(s, job.id, tok, "w", REPORT, None)
    return cid, job.id


def audit(app, action):
    with app.state.sessions() as s:
        return [e.detail for e in s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))]


# ------------------------------------------------------------------------------ D2: callback URL policy
REFUSED = ["http://127.0.0.1/hook", "http://localhost:8080/hook", "http://[::1]/hook", "http://2130706433/hook",
           "http://0x7f.0.0.1/hook", "http://127.1/hook", "http://10.0.0.1/hook", "http://192.168.1.10/hook",
           "http://169.254.169.254/latest/meta-data", "http://[::ffff:127.0.0.1]/hook", "http://0.0.0.0/hook",
           "http://224.0.0.1/hook", "http://100.64.0.1/hook", "http://[fe80::1]/hook", "http://240.0.0.1/hook"]


def test_callback_url_policy_at_case_creation(tmp_path):
    client, app, keys = make(tmp_path)
    key = keys["acme"]
    for url in REFUSED:
        r = client.post("/v1/cases", json={"external_id": "x", "callback_url": url}, headers=auth(key))
        assert_error(r, 422, "callback_url_not_allowed")
        if "localhost" in url:  # the answer names the host, never the address it resolved to
            assert "127.0.0.1" not in r.json()["error"]["message"] and "::1" not in r.json()["error"]["message"]
    with app.state.sessions() as s:
        assert s.scalar(select(func.count(Case.id))) == 0
    # a public address is accepted (an address literal: no DNS needed here)
    assert client.post("/v1/cases", json={"external_id": "ok", "callback_url": "https://93.184.215.14/hook?t=1"},
                       headers=auth(key)).status_code == 201
    # the operator's allow list (carcheck serve --allow-callback-host 127.0.0.1)
    client2, _, keys2 = make(tmp_path / "allowed", allowed_callback_hosts={"127.0.0.1"})
    assert client2.post("/v1/cases", json={"external_id": "x", "callback_url": "http://127.0.0.1:9/hook"},
                        headers=auth(keys2["acme"])).status_code == 201
    assert_error(client2.post("/v1/cases", json={"external_id": "x", "callback_url": "http://10.0.0.1/hook"},
                              headers=auth(keys2["acme"])), 422, "callback_url_not_allowed")


def test_delivery_checks_the_host_again_and_connects_to_the_checked_address(tmp_path, database_url, monkeypatch):
    """DNS rebinding: a name that resolved to a public address at creation resolves to loopback at delivery."""
    from carcheck.serve import callbacks

    answers = {"rebind.test": ["93.184.215.14"], "public.test": ["93.184.215.14"]}
    real = socket.getaddrinfo

    def fake(host, port, *a, **kw):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host][0], port))]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    client, app, keys = make(tmp_path, database_url, callback_backoff_seconds=0.0)
    _, job1 = finished_job(client, app, keys["acme"], "rebind", callback_url="http://rebind.test/hook")
    _, job2 = finished_job(client, app, keys["acme"], "public", callback_url="http://public.test:8080/hook?token=T")
    answers["rebind.test"] = ["127.0.0.1"]  # the attacker's DNS changes its answer
    seen = []
    mock = httpx.Client(transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(204)))
    assert callbacks.deliver_callback(app.state.sessions, job1, app.state.settings, client=mock) == "pending"
    assert seen == []  # nothing was sent to loopback
    assert callbacks.deliver_callback(app.state.sessions, job2, app.state.settings, client=mock) == "delivered"
    (req,) = seen
    assert str(req.url) == "http://93.184.215.14:8080/hook?token=T"  # the checked address, not a new lookup
    assert req.headers["host"] == "public.test:8080"
    errors = [d["error"] for d in audit(app, "callback.error")]
    assert errors == ["delivery failed: callback host not allowed"]


def _listener_closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    return port


def test_delivery_errors_are_no_port_scan_oracle(tmp_path):
    """A refused connection and an HTTP 501 both read 'delivery failed' + status class, no socket text."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    from carcheck.serve import callbacks

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(501)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client, app, keys = make(tmp_path, allowed_callback_hosts={"127.0.0.1"}, callback_timeout_seconds=3)
        _, j1 = finished_job(client, app, keys["acme"], "a", callback_url=f"http://127.0.0.1:{_listener_closed_port()}/h")
        _, j2 = finished_job(client, app, keys["acme"], "b", callback_url=f"http://127.0.0.1:{srv.server_address[1]}/h")
        callbacks.deliver_callback(app.state.sessions, j1, app.state.settings)
        callbacks.deliver_callback(app.state.sessions, j2, app.state.settings)
    finally:
        srv.shutdown()
        srv.server_close()
    errors = [d["error"] for d in audit(app, "callback.error")]
    assert errors == ["delivery failed: no response", "delivery failed: HTTP 5xx"]
    with app.state.sessions() as s:
        stored = sorted(s.scalars(select(Job.callback_error)).all())
    assert stored == ["delivery failed: HTTP 5xx", "delivery failed: no response"]
    assert not any("refused" in e.lower() or "501" in e for e in errors)


# ------------------------------------------------------------------------------ signed callbacks
def _doc_verifier():
    """The receiver's check as docs/service-security.md shows it (its first ```python block), executed."""
    text = DOC.read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    ns: dict = {}
    exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 - the documentation's own example
    return ns["verify"]


def test_callbacks_are_signed_and_the_documented_check_accepts_them(tmp_path, database_url):
    from carcheck.cli import app as cli
    from carcheck.serve import callbacks

    client, app, keys = make(tmp_path, database_url, allowed_callback_hosts={"127.0.0.1"})
    cid, job = finished_job(client, app, keys["acme"], "signed", callback_url="http://127.0.0.1:9/hook")
    args = ["--tenant", "acme", "--data-dir", str(tmp_path / "data")] + (["--database-url", database_url]
                                                                         if database_url else [])
    r = CliRunner().invoke(cli, ["webhooks", "secret", *args])
    assert r.exit_code == 0, r.output
    secret = r.output.strip()
    assert secret.startswith("whsec_") and len(secret) > 40
    assert CliRunner().invoke(cli, ["webhooks", "secret", *args]).output.strip() == secret  # stable until rotated
    sent = []
    mock = httpx.Client(transport=httpx.MockTransport(lambda r: sent.append((r.headers, r.read())) or httpx.Response(200)))
    assert callbacks.deliver_callback(app.state.sessions, job, app.state.settings, client=mock) == "delivered"
    headers, body = sent[0]
    assert json.loads(body)["case_id"] == cid
    ts, sig = headers["x-carcheck-timestamp"], headers["x-carcheck-signature"]
    assert abs(int(ts) - time.time()) < 60 and re.fullmatch(r"v1=[0-9a-f]{64}", sig)
    verify = _doc_verifier()
    assert verify(secret, ts, sig, body)
    assert callbacks.verify_signature(secret, ts, sig, body)
    assert not verify(secret, ts, sig, body.replace(b"assessed", b"failed!!"))  # a changed body
    assert not verify(secret, str(int(ts) - 1), sig, body)  # a changed timestamp
    assert not verify("whsec_other", ts, sig, body)  # another secret
    old = int(time.time()) - 3600
    assert not verify(secret, str(old), callbacks.sign(secret, old, body), body)  # an old (replayed) delivery
    # rotation: a new secret; the old one no longer verifies new deliveries
    r = CliRunner().invoke(cli, ["webhooks", "secret", "--rotate", *args])
    new = r.output.strip()
    assert r.exit_code == 0 and new != secret and new.startswith("whsec_")
    with app.state.sessions() as s:
        s.execute(update(Job).where(Job.id == job).values(callback_state="pending", callback_next_at=utcnow()))
        s.commit()
    callbacks.deliver_callback(app.state.sessions, job, app.state.settings, client=mock)
    h2, b2 = sent[1]
    assert verify(new, h2["x-carcheck-timestamp"], h2["x-carcheck-signature"], b2)
    assert not verify(secret, h2["x-carcheck-timestamp"], h2["x-carcheck-signature"], b2)
    actions = [a for a in ("webhook_secret.created", "webhook_secret.rotated") if audit(app, a)]
    assert actions == ["webhook_secret.created", "webhook_secret.rotated"]
    r = CliRunner().invoke(cli, ["webhooks", "secret", "--tenant", "nobody", "--data-dir", str(tmp_path / "data")]
                           + (["--database-url", database_url] if database_url else []))
    assert r.exit_code == 2 and "no tenant" in r.output


# ------------------------------------------------------------------------------ D12: account lifecycle
def test_keys_list_and_revoke_take_effect_at_once(tmp_path, database_url):
    from carcheck.cli import app as cli

    client, app, keys = make(tmp_path, database_url)
    db = ["--data-dir", str(tmp_path / "data")] + (["--database-url", database_url] if database_url else [])
    a = keys["acme"]
    assert client.get("/v1/cases", headers=auth(a)).status_code == 200
    r = CliRunner().invoke(cli, ["keys", "list", "--tenant", "acme", *db])
    assert r.exit_code == 0
    prefix = a.split("_")[1]
    rows = [ln.split("\t") for ln in r.output.strip().splitlines()[1:]]
    assert [(p, t, rv) for p, t, _, _, rv in rows] == [(prefix, "acme", "-")]
    assert a.split("_", 2)[2] not in r.output  # no secret is listed
    r = CliRunner().invoke(cli, ["keys", "revoke", prefix, *db])
    assert r.exit_code == 0 and f"revoked key {prefix}" in r.output
    assert_error(client.get("/v1/cases", headers=auth(a)), 401, "unauthorized")  # the same running app
    assert client.get("/v1/cases", headers=auth(keys["globex"])).status_code == 200
    r = CliRunner().invoke(cli, ["keys", "list", "--tenant", "acme", *db])
    assert r.output.strip().splitlines()[1].split("\t")[4] != "-"
    assert CliRunner().invoke(cli, ["keys", "revoke", "000000000000", *db]).exit_code == 2
    assert audit(app, "key.revoked") == [{"prefix": prefix}]


def _login(client, email, password=PASSWORD):
    r = client.get("/login")
    tok = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": tok},
                       follow_redirects=False)


def test_users_list_and_disable_end_sessions(tmp_path):
    from carcheck.cli import app as cli

    client, app, keys = make(tmp_path)
    db = ["--data-dir", str(tmp_path / "data")]
    reviewer(app, "acme", "a@example.org")
    reviewer(app, "globex", "g@example.org")
    assert _login(client, "a@example.org").status_code == 303
    assert client.get("/review", follow_redirects=False).status_code == 200
    r = CliRunner().invoke(cli, ["users", "list", *db])
    assert r.exit_code == 0
    assert [ln.split("\t")[:3] for ln in r.output.strip().splitlines()[1:]] == [
        ["a@example.org", "acme", "reviewer"], ["g@example.org", "globex", "reviewer"]]
    # the account must be the tenant's
    assert CliRunner().invoke(cli, ["users", "disable", "a@example.org", "--tenant", "globex", *db]).exit_code == 2
    r = CliRunner().invoke(cli, ["users", "disable", "A@example.org", "--tenant", "acme", *db])
    assert r.exit_code == 0 and "1 session(s) ended" in r.output
    assert client.get("/review", follow_redirects=False).status_code == 303  # the open session ended
    r = _login(client, "a@example.org")
    assert r.status_code == 200 and "Wrong e-mail or password" in r.text
    r = CliRunner().invoke(cli, ["users", "list", "--tenant", "acme", *db])
    assert r.output.strip().splitlines()[1].split("\t")[4] != "-"


# ------------------------------------------------------------------------------ D3: login throttling
def test_login_throttled_per_account_and_per_client(tmp_path, database_url, monkeypatch):
    from carcheck.serve.review import accounts

    client, app, keys = make(tmp_path, database_url, login_max_failures_client=8)  # (default 20; fewer argon2 runs)
    reviewer(app, "acme", "a@example.org")
    verified = []
    real = accounts._hasher

    class Counting:  # the argon2 hasher, counting its password checks
        def verify(self, h, p):
            verified.append(1)
            return real.verify(h, p)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(accounts, "_hasher", Counting())
    codes = [_login(client, "a@example.org", f"wrong password {i}").status_code for i in range(5)]
    assert codes == [200, 200, 200, 200, 429]  # the 5th failure locks the account
    n = len(verified)
    r = _login(client, "a@example.org")  # even the right password: refused without checking it
    assert r.status_code == 429 and "Too many failed logins" in r.text
    assert 800 <= int(r.headers["retry-after"]) <= 900
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert len(verified) == n  # no argon2 work for a throttled attempt
    failed = audit(app, "user.login_failed")
    assert len(failed) == 5 and failed[0]["email"] == "a@example.org" and failed[0]["client"] == "testclient"
    assert len(audit(app, "user.locked_out")) == 1 and len(audit(app, "user.login_throttled")) == 1
    # the window passes: the right password logs in, and clears the account's failures
    with app.state.sessions() as s:
        for row in s.scalars(select(LoginFailure)):
            row.at = row.at - dt.timedelta(minutes=16)
        s.commit()
    assert _login(client, "a@example.org").status_code == 303
    # per client: 8 failures over any accounts from one address lock that address
    other = [_login(client, f"nobody{i}@example.org", "x" * 12).status_code for i in range(8)]
    assert other[:7] == [200] * 7 and other[7] == 429
    assert _login(client, "fresh@example.org", "y" * 12).status_code == 429


# ------------------------------------------------------------------------------ D4: /metrics bounded
def test_metrics_labels_stay_bounded(tmp_path):
    client, _, keys = make(tmp_path)
    client.get("/metrics")
    before = len(client.get("/metrics").content)
    for i in range(150):
        client.request(f"X{i}METHOD", f"/v1/cases/nothing-{i}", headers=auth(keys["acme"]))
        client.get(f"/no/such/path/{i}")
    m = client.get("/metrics").text
    assert len(m.encode()) < before + 4000, (before, len(m))  # 300 requests added a few label sets, no more
    assert "X1METHOD" not in m and "nothing-1" not in m and "/no/such" not in m
    assert 'method="other"' in m and 'route="unmatched"' in m


# ------------------------------------------------------------------------------ D5: worker settings
def test_worker_settings_travel_outside_argv(tmp_path):
    import os
    import subprocess
    import sys

    from carcheck.serve.jobs import SETTINGS_ENV, Supervisor

    secret_url = "postgresql+psycopg://carcheck:S3cretPassw0rd@127.0.0.1:1/carcheck"
    sup = Supervisor(Settings(data_dir=tmp_path / "data", database_url=secret_url, workers=1))
    proc = sup._spawn()
    try:
        deadline = time.monotonic() + 30
        cmdline = b""
        while time.monotonic() < deadline and b"carcheck.serve.jobs" not in cmdline:  # until it has exec'd
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert b"S3cretPassw0rd" not in cmdline and b"database_url" not in cmdline, cmdline
    assert cmdline.split(b"\0")[1:3] == [b"-m", b"carcheck.serve.jobs"]
    # without its environment variable a worker refuses to start (exit 2), it never reads argv
    env = {k: v for k, v in os.environ.items() if k != SETTINGS_ENV}
    r = subprocess.run([sys.executable, "-m", "carcheck.serve.jobs", '{"workers": 1}'], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and SETTINGS_ENV in r.stderr


# ------------------------------------------------------------------------------ D6, D7: numbers and forms
def test_huge_numbers_are_422_or_400_never_500(tmp_path, database_url):
    client, app, keys = make(tmp_path, database_url)
    key = keys["acme"]
    case_id = assessed_case(client, key, n_findings=2)
    reviewer(app, "acme", "a@example.org")
    assert _login(client, "a@example.org").status_code == 303
    huge = "9999999999999999999999999"
    for r in (client.post(f"/v1/cases/{case_id}/findings/{huge}/review", json={"action": "confirm"}, headers=auth(key)),
              client.post(f"/v1/cases/{case_id}/findings/2147483648/review", json={"action": "confirm"},
                          headers=auth(key)),
              client.get(f"/v1/review/stats?min_support={huge}", headers=auth(key))):
        assert_error(r, 422, "invalid_request")
    assert client.get(f"/review/cases/{case_id}/findings/{huge}/crop.jpg").status_code == 422
    assert client.get(f"/review/cases/{case_id}?sel={huge}").status_code == 422
    assert client.post(f"/v1/cases/{case_id}/findings/2147483647/review", json={"action": "confirm"},
                       headers=auth(key)).status_code == 404
    for cursor in (base64.urlsafe_b64encode(f"c{huge}".encode()).decode(), "Y" * 90, "%%%", "x" * 500):
        r = client.get("/v1/cases", params={"cursor": cursor}, headers=auth(key))
        assert r.status_code in (400, 422) and r.json()["error"]["code"] in ("bad_cursor", "invalid_request"), r.text
    r = client.post(f"/v1/cases/{case_id}/damages", headers=auth(key), content=json.dumps(
        {"photo_id": "photo_x", "damage": "dent", "part": "hood", "bbox_xywh": [float("nan"), 1, 2, 3]}).encode(),
        )
    assert_error(r, 422, "invalid_request")


def test_bad_review_form_values_show_the_error_on_the_page(tmp_path):
    client, app, keys = make(tmp_path)
    key = keys["acme"]
    case_id = assessed_case(client, key, n_findings=2)
    reviewer(app, "acme", "a@example.org")
    assert _login(client, "a@example.org").status_code == 303
    page = client.get(f"/review/cases/{case_id}").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    state = client.get(f"/v1/cases/{case_id}/review", headers=auth(key)).json()
    fid = state["findings"][0]["id"]
    photo = client.get(f"/v1/cases/{case_id}", headers=auth(key)).json()["photos"][0]["id"]
    bad_decisions = [{"action": "edit", "note": "n" * 2001}, {"action": "bogus"}, {"action": "confirm", "severity": "catastrophic"},
                     {"action": "confirm", "damage": "rust"}]
    for form in bad_decisions:
        r = client.post(f"/review/cases/{case_id}/findings/{fid}", data={**form, "csrf_token": csrf},
                        follow_redirects=False)
        assert r.status_code == 422, (form, r.status_code, r.text[:300])
        assert 'id="form-error"' in r.text and "Not saved" in r.text and "text/html" in r.headers["content-type"]
    box = {"photo_id": photo, "damage": "dent", "part": "hood", "x": "10", "y": "10", "w": "50", "h": "50"}
    for extra in ({"polygon": "1,2,3"}, {"x": "nan"}, {"w": "inf"}, {"x": "ten"}, {"note": "n" * 2001}):
        r = client.post(f"/review/cases/{case_id}/damages", data={**box, **extra, "csrf_token": csrf},
                        follow_redirects=False)
        assert r.status_code == 422, (extra, r.status_code, r.text[:300])
        assert 'id="form-error"' in r.text
    # nothing was recorded; a valid form still works
    assert client.get(f"/v1/cases/{case_id}/review", headers=auth(key)).json()["counts"]["added"] == 0
    r = client.post(f"/review/cases/{case_id}/damages", data={**box, "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get(f"/v1/cases/{case_id}/review", headers=auth(key)).json()["counts"]["added"] == 1


# ------------------------------------------------------------------------------ D8: opaque cursors
def test_cursors_reveal_nothing_across_tenants(tmp_path, database_url):
    client, app, keys = make(tmp_path, database_url)
    a, b = keys["acme"], keys["globex"]
    for i in range(7):
        new_case(client, b, f"b{i}")  # another tenant's rows before and between
        new_case(client, a, f"a{i}")
    r = client.get("/v1/cases", params={"limit": 3}, headers=auth(a)).json()
    cursor = r["next_cursor"]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    assert raw == r["items"][-1]["id"].encode()  # only what the page showed: the last item's public id
    pages = [x["id"] for x in r["items"]]
    while cursor:
        r = client.get("/v1/cases", params={"limit": 3, "cursor": cursor}, headers=auth(a)).json()
        pages += [x["id"] for x in r["items"]]
        cursor = r["next_cursor"]
    assert len(pages) == 7 and len(set(pages)) == 7
    # another tenant's cursor (or case id) is refused like a forged one
    b_cursor = client.get("/v1/cases", params={"limit": 1}, headers=auth(b)).json()["next_cursor"]
    assert_error(client.get("/v1/cases", params={"cursor": b_cursor}, headers=auth(a)), 400, "bad_cursor")


# ------------------------------------------------------------------------------ D9: rejected uploads
def test_rejected_uploads_are_bounded_and_photos_paged(tmp_path, database_url):
    client, app, keys = make(tmp_path, database_url, max_photos_per_case=4, max_rejected_per_case=6)
    key = keys["acme"]
    cid = new_case(client, key)
    for _ in range(3):
        r = client.post(f"/v1/cases/{cid}/photos", headers=auth(key),
                        files=[("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(5)])
        assert r.status_code == 201 and all(o["status"] == "rejected" for o in r.json())
    assert [o["id"] is None for o in r.json()] == [True] * 5  # answered, not recorded
    assert "not recorded" in r.json()[0]["reason"]
    with app.state.sessions() as s:
        assert s.scalar(select(func.count(Photo.id)).where(Photo.status == "rejected")) == 6
    r = client.post(f"/v1/cases/{cid}/photos", headers=auth(key),
                    files=[("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(11)])
    assert_error(r, 413, "too_many_files")
    # good photos are still accepted; the case pages its photos
    r = client.post(f"/v1/cases/{cid}/photos", headers=auth(key),
                    files=[("files", (f"g{i}.jpg", jpeg_bytes(colour=(i, 9, 9)), "image/jpeg")) for i in range(3)])
    assert [o["status"] for o in r.json()] == ["stored"] * 3
    seen, cursor = [], None
    while True:
        body = client.get(f"/v1/cases/{cid}", params={"photos_limit": 4, **({"photos_cursor": cursor} if cursor else {})},
                          headers=auth(key)).json()
        assert len(body["photos"]) <= 4
        seen += [p["id"] for p in body["photos"]]
        cursor = body["photos_next_cursor"]
        if not cursor:
            break
    assert len(seen) == 9 and len(set(seen)) == 9
    assert_error(client.get(f"/v1/cases/{cid}", params={"photos_limit": 100000}, headers=auth(key)), 422,
                 "invalid_request")


# ------------------------------------------------------------------------------ D10: 413 for chunked bodies
def test_chunked_body_over_the_limit_is_413(tmp_path):
    client, _, keys = make(tmp_path, max_request_bytes=200_000)
    cid = new_case(client, keys["acme"])
    boundary = "b0undary"

    def chunks():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
               "Content-Type: image/jpeg\r\n\r\n").encode()
        for _ in range(40):
            yield b"\xff" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(f"/v1/cases/{cid}/photos", content=chunks(),
                    headers={**auth(keys["acme"]), "content-type": f"multipart/form-data; boundary={boundary}"})
    assert_error(r, 413, "too_large")
    # JSON bodies too
    def big_json():
        yield b'{"external_id": "'
        for _ in range(30):
            yield b"a" * 10_000
        yield b'"}'
    r = client.post("/v1/cases", content=big_json(), headers={**auth(keys["acme"]), "content-type": "application/json"})
    assert_error(r, 413, "too_large")


# ------------------------------------------------------------------------------ also: HTML headers, /docs
def test_html_answers_carry_csp_and_nosniff_and_docs_are_off(tmp_path):
    from test_review_support import fixture_report

    client, app, keys = make(tmp_path)
    key = keys["acme"]
    store = app.state.store
    ids = [new_case(client, key, f"c{i}") for i in range(2)]
    with app.state.sessions() as s:  # two assessed cases (the stored report of a real run; no photos: a quick page)
        for i, cid in enumerate(ids):
            case = s.scalar(select(Case).where(Case.public_id == cid))
            html = store.report_dir(cid, f"job{i}") / "report.html"
            html.parent.mkdir(parents=True)
            html.write_text("<!doctype html><html><head><style>b{}</style></head><body>report</body></html>")
            case.status, case.report_json, case.report_job_id = "assessed", {**fixture_report(2), "case_id": cid}, i + 1
            case.report_html = str(html.relative_to(store.root))
        s.commit()
    after, before = ids
    for url in (f"/v1/cases/{after}/report.html", f"/v1/cases/{after}/compare/{before}/compare.html"):
        r = client.get(url, headers=auth(key))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (url, r.text[:200])
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp, csp
        assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/v1/cases/{after}", headers=auth(key)).headers["x-content-type-options"] == "nosniff"
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200
    docs_client, _, _ = make(tmp_path / "docs", docs=True)
    r = docs_client.get("/docs")
    assert r.status_code == 200 and "cdn.jsdelivr.net" in r.headers["content-security-policy"]


# ------------------------------------------------------------------------------ D13: work folders
def test_work_folders_of_dead_attempts_are_removed(tmp_path):
    from carcheck.serve.jobs import claim, cleanup_work_dirs, prepare_work_dir

    client, app, keys = make(tmp_path)
    key = keys["acme"]
    cid = new_case(client, key)
    client.post(f"/v1/cases/{cid}/photos", files=[("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))], headers=auth(key))
    client.post(f"/v1/cases/{cid}/assessments", headers=auth(key))
    root = app.state.store.root
    with app.state.sessions() as s:
        job, t1 = claim(s, "w1", 30)
    first = prepare_work_dir(root, job.public_id, t1)
    (first / "photo.jpg").write_bytes(b"x")
    # the worker is killed; the lease expires and another worker claims the job again
    with app.state.sessions() as s:
        s.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
        s.commit()
        job2, t2 = claim(s, "w2", 30)
    second = prepare_work_dir(root, job2.public_id, t2)
    assert not first.exists() and second.is_dir()
    # at start: folders of attempts not running now go, the running attempt's stays
    stale = root / "work" / "job_00000000000000000000-deadbeef"
    stale.mkdir()
    (root / "work" / "stray.tmp").write_bytes(b"x")
    with app.state.sessions() as s:
        removed = cleanup_work_dirs(root, s)
    assert sorted(removed) == ["job_00000000000000000000-deadbeef", "stray.tmp"]
    assert second.is_dir() and [p.name for p in (root / "work").iterdir()] == [second.name]
    with app.state.sessions() as s:
        s.execute(update(Job).where(Job.id == job.id).values(status="done", lease_token=None))
        s.commit()
        assert cleanup_work_dirs(root, s) == [second.name]
    assert not any((root / "work").iterdir())
