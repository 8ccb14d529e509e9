"""The service's API in process (FastAPI TestClient, no workers): auth and tenant isolation, rate
limit, bad input through the upload, limits, cursor paging, JSON errors, and the job queue's
protocol (claim, lease expiry, stale completion, attempts, callbacks). On SQLite and, when
CARCHECK_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import struct
import zlib
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402

from carcheck.serve.app import create_app  # noqa: E402
from carcheck.serve.auth import create_key  # noqa: E402
from carcheck.serve.db.models import ApiKey, AuditEvent, Case, Finding, Job, Photo, utcnow  # noqa: E402
from carcheck.serve.settings import Settings  # noqa: E402



def make(tmp_path, database_url, **kw):
    """(TestClient, app, {tenant: key})."""
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=database_url, **kw))
    keys = {}
    with app.state.sessions() as s:
        for t in ("acme", "globex"):
            keys[t] = create_key(s, t)
        s.commit()
    return TestClient(app), app, keys


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def jpeg_bytes(w=320, h=240, colour=(120, 60, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def noisy_jpeg(w=640, h=480, seed=0) -> bytes:
    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def png_bomb_header(w=100_000, h=100_000) -> bytes:
    """A valid PNG signature + IHDR declaring w x h pixels, one tiny IDAT: a decompression-bomb header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def new_case(client, key, ext="claim-1", **kw):
    r = client.post("/v1/cases", json={"external_id": ext, **kw}, headers=auth(key))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "open"
    return r.json()["id"]


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


# ------------------------------------------------------------------------------------------------ auth
def test_auth_401_and_tenant_isolation(tmp_path, database_url):
    client, app, keys = make(tmp_path, database_url)
    a, b = keys["acme"], keys["globex"]
    for headers in ({}, {"Authorization": "Basic Zm9vOmJhcg=="}, auth("nonsense"),
                    auth(a[:-2] + ("xx" if not a.endswith("xx") else "yy")),  # right prefix, wrong secret
                    auth("cck_000000000000_" + "A" * 43)):
        r = client.get("/v1/cases", headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    cid = new_case(client, a)
    client.post(f"/v1/cases/{cid}/photos", files=[("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))], headers=auth(a))
    # globex sees nothing of acme's case: every route answers 404 as for a missing case
    assert_error(client.get(f"/v1/cases/{cid}", headers=auth(b)), 404, "not_found")
    assert_error(client.post(f"/v1/cases/{cid}/photos", files=[("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))],
                             headers=auth(b)), 404, "not_found")
    assert_error(client.post(f"/v1/cases/{cid}/assessments", headers=auth(b)), 404, "not_found")
    assert_error(client.get(f"/v1/cases/{cid}/report.html", headers=auth(b)), 404, "not_found")
    photo = client.get(f"/v1/cases/{cid}", headers=auth(a)).json()["photos"][0]
    assert client.get(photo["url"], headers=auth(a)).status_code == 200
    assert_error(client.get(photo["url"], headers=auth(b)), 404, "not_found")
    assert client.get("/v1/cases", headers=auth(b)).json()["items"] == []
    assert [c["id"] for c in client.get("/v1/cases", headers=auth(a)).json()["items"]] == [cid]
    # a revoked key is refused
    with app.state.sessions() as s:
        s.execute(update(ApiKey).where(ApiKey.prefix == a.split("_")[1]).values(revoked_at=utcnow()))
        s.commit()
    assert_error(client.get("/v1/cases", headers=auth(a)), 401, "unauthorized")
    # keys are stored hashed: the secret appears nowhere in the table
    with app.state.sessions() as s:
        assert all(a not in (k.key_hash, k.prefix) and len(k.key_hash) == 64 for k in s.scalars(select(ApiKey)))


def test_rate_limit_per_key(tmp_path, database_url):
    client, _, keys = make(tmp_path, database_url, rate_limit=0.5, rate_burst=3)
    codes = [client.get("/v1/cases", headers=auth(keys["acme"])).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429], codes
    r = client.get("/v1/cases", headers=auth(keys["acme"]))
    assert_error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert client.get("/v1/cases", headers=auth(keys["globex"])).status_code == 200  # another key's own bucket


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_rejected_with_reason_rest_goes_on(tmp_path, database_url):
    client, app, keys = make(tmp_path, database_url, max_file_bytes=400_000)
    key = keys["acme"]
    cid = new_case(client, key)
    good = jpeg_bytes()
    big = noisy_jpeg(1200, 900)
    assert len(big) > 400_000
    files = [
        ("files", ("good.jpg", good, "image/jpeg")),
        ("files", ("truncated.jpg", noisy_jpeg()[:5000], "image/jpeg")),
        ("files", ("notes.jpg", b"%PDF-1.4 this is no photo\n" * 20, "image/jpeg")),
        ("files", ("bomb.png", png_bomb_header(), "image/png")),
        ("files", ("huge.jpg", big, "image/jpeg")),
        ("files", ("empty.jpg", b"", "image/jpeg")),
        ("files", ("../../../../etc/passwd.jpg", jpeg_bytes(colour=(1, 2, 3)), "image/jpeg")),
        ("files", ("<script>alert(1)</script>\u202e\u540d.jpg", jpeg_bytes(colour=(9, 9, 9)), "text/plain")),
        ("files", ("x" * 900 + ".jpg", jpeg_bytes(colour=(7, 7, 7)), "image/jpeg")),
    ]
    r = client.post(f"/v1/cases/{cid}/photos", files=files, headers=auth(key))
    assert r.status_code == 201, r.text
    out = r.json()
    assert len(out) == len(files)
    by = {i: o for i, o in enumerate(out)}
    assert by[0]["status"] == "stored" and by[0]["format"] == "JPEG" and (by[0]["width"], by[0]["height"]) == (320, 240)
    import hashlib

    assert by[0]["sha256"] == hashlib.sha256(good).hexdigest()
    for i, needle in ((1, "truncat"), (2, "not an image"), (3, "decompression bomb"), (4, "too large"),
                      (5, "empty")):
        assert by[i]["status"] == "rejected" and needle in by[i]["reason"].lower(), by[i]
        assert by[i]["url"] is None
    # hostile names: stored by content, the name kept only as text (last component, printable, bounded)
    for i in (6, 7, 8):
        assert by[i]["status"] == "stored", by[i]
        assert "/" not in by[i]["filename"] and len(by[i]["filename"]) <= 200
    assert by[6]["filename"] == "passwd.jpg"
    assert by[7]["filename"] == "script>_\u540d.jpg"  # after the last "/", the bidi override replaced
    data = tmp_path / "data"
    assert not (tmp_path / "etc").exists() and not Path("/etc/passwd.jpg").exists()
    blobs = sorted(p.name for p in (data / "blobs").rglob("*") if p.is_file())
    assert blobs == sorted({o["sha256"] for o in out if o["status"] == "stored"})  # content-addressed, nothing else
    assert not any((data / "tmp").iterdir())  # rejected uploads leave no temporary file
    # the served photo is the blurred derivative (a JPEG), never the original bytes
    r = client.get(by[0]["url"], headers=auth(key))
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content != good
    # the case goes on: its stored photos can be assessed
    r = client.post(f"/v1/cases/{cid}/assessments", headers=auth(key))
    assert r.status_code == 202 and r.json()["status"] == "queued"
    with app.state.sessions() as s:
        assert s.scalar(select(func.count(Photo.id)).where(Photo.status == "rejected")) == 5
    # a name too long for the multipart parser fails that request with a JSON 400, nothing else
    cid2 = new_case(client, key, "claim-2")
    r = client.post(f"/v1/cases/{cid2}/photos", files=[("files", ("y" * 5000 + ".jpg", good, "image/jpeg"))],
                    headers=auth(key))
    assert_error(r, 400, "bad_request")
    r = client.post(f"/v1/cases/{cid2}/photos", files=[("files", ("ok.jpg", good, "image/jpeg"))], headers=auth(key))
    assert r.status_code == 201 and r.json()[0]["status"] == "stored"


def test_limits_per_case_and_request(tmp_path, database_url):
    client, _, keys = make(tmp_path, database_url, max_photos_per_case=2, max_case_bytes=3 * len(jpeg_bytes()),
                           max_request_bytes=300_000)
    key = keys["acme"]
    cid = new_case(client, key)
    r = client.post(f"/v1/cases/{cid}/photos", headers=auth(key),
                    files=[("files", (f"{i}.jpg", jpeg_bytes(colour=(i, i, i)), "image/jpeg")) for i in range(3)])
    st = [o["status"] for o in r.json()]
    assert st == ["stored", "stored", "rejected"] and "limit 2 per case" in r.json()[2]["reason"]
    cid2 = new_case(client, key, "claim-2")
    r = client.post(f"/v1/cases/{cid2}/photos", headers=auth(key),
                    files=[("files", ("n.jpg", noisy_jpeg(200, 200), "image/jpeg"))])
    assert r.json()[0]["status"] == "rejected" and "per case" in r.json()[0]["reason"]
    # a body above the request limit: 413 before it is parsed
    r = client.post(f"/v1/cases/{cid2}/photos", headers=auth(key),
                    files=[("files", ("big.jpg", b"\xff" * 400_000, "image/jpeg"))])
    assert_error(r, 413, "too_large")
    # a request without the multipart field: a JSON 422
    assert_error(client.post(f"/v1/cases/{cid2}/photos", headers=auth(key)), 422, "invalid_request")


# ----------------------------------------------------------------------------------- paging and errors
def test_cursor_paging_and_status_filter(tmp_path, database_url):
    client, _, keys = make(tmp_path, database_url)
    key = keys["acme"]
    ids = [new_case(client, key, f"c{i}") for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get("/v1/cases", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=auth(key))
        assert r.status_code == 200
        seen += [c["id"] for c in r.json()["items"]]
        pages += 1
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == ids[::-1]  # newest first, each case once
    assert len(client.get("/v1/cases", params={"status": "open"}, headers=auth(key)).json()["items"]) == 5
    assert client.get("/v1/cases", params={"status": "assessed"}, headers=auth(key)).json()["items"] == []
    assert_error(client.get("/v1/cases", params={"cursor": "!!bad"}, headers=auth(key)), 400, "bad_cursor")
    assert_error(client.get("/v1/cases", params={"status": "nope"}, headers=auth(key)), 422, "invalid_request")
    assert_error(client.get("/v1/cases", params={"limit": 0}, headers=auth(key)), 422, "invalid_request")


def test_json_errors_and_conflicts(tmp_path, database_url):
    client, _, keys = make(tmp_path, database_url)
    key = keys["acme"]
    assert_error(client.get("/v1/nothing-here", headers=auth(key)), 404, "not_found")
    assert_error(client.post("/v1/cases", json={"callback_url": "not a url"}, headers=auth(key)), 422, "invalid_request")
    assert_error(client.post("/v1/cases", content=b"{", headers={**auth(key), "content-type": "application/json"}),
                 422, "invalid_request")
    cid = new_case(client, key)
    assert_error(client.post(f"/v1/cases/{cid}/assessments", headers=auth(key)), 409, "no_photos")
    assert_error(client.get(f"/v1/cases/{cid}/report.html", headers=auth(key)), 404, "not_assessed")
    client.post(f"/v1/cases/{cid}/photos", files=[("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))], headers=auth(key))
    assert client.post(f"/v1/cases/{cid}/assessments", headers=auth(key)).status_code == 202
    r = client.post(f"/v1/cases/{cid}/assessments", headers=auth(key))
    assert_error(r, 409, "already_queued")
    assert r.json()["error"]["detail"]["status"] == "queued"
    assert_error(client.post(f"/v1/cases/{cid}/photos", files=[("files", ("b.jpg", jpeg_bytes(), "image/jpeg"))],
                             headers=auth(key)), 409, "case_busy")
    assert client.get(f"/v1/cases/{cid}", headers=auth(key)).json()["status"] == "queued"
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    m = client.get("/metrics")
    assert m.status_code == 200 and 'carcheck_jobs{status="queued"} 1.0' in m.text
    assert 'route="/v1/cases/{case_id}/assessments",status="409"' in m.text
    assert client.get("/openapi.json").json()["paths"]["/v1/cases/{case_id}/photos"]["post"]


# ------------------------------------------------------------------------------------------ job queue
def _queued_case(client, app, key, ext="q1"):
    cid = new_case(client, key, ext)
    client.post(f"/v1/cases/{cid}/photos", files=[("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))], headers=auth(key))
    assert client.post(f"/v1/cases/{cid}/assessments", headers=auth(key)).status_code == 202
    with app.state.sessions() as s:
        return s.scalar(select(Case.id).where(Case.public_id == cid))


REPORT = {"findings": [{"part": "door", "damage": "dent", "size_class": "small", "c_refined": 0.7,
                        "needs_review": False}], "summary": {"verdict": "x"}}


def test_queue_lease_expiry_and_exactly_once(tmp_path, database_url):
    from carcheck.serve.jobs import claim, complete, renew

    client, app, keys = make(tmp_path, database_url)
    case_id = _queued_case(client, app, keys["acme"])
    S = app.state.sessions
    with S() as s:
        got = claim(s, "w1", lease_seconds=30)
    with S() as s:
        assert claim(s, "w2", lease_seconds=30) is None  # held: nobody else gets it
    job, t1 = got
    with S() as s:
        assert renew(s, job.id, t1, 30)
        # w1 "dies": its lease runs out
        s.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
        s.commit()
    with S() as s:
        job2, t2 = claim(s, "w2", lease_seconds=30)
    assert job2.id == job.id and t2 != t1 and job2.attempts == 2
    with S() as s:
        assert not renew(s, job.id, t1, 30)  # w1 lost the lease
        assert not complete(s, job.id, t1, "w1", REPORT, None)  # a late finish of w1 changes nothing
    with S() as s:
        assert s.get(Job, job.id).status == "running" and s.get(Case, case_id).status == "running"
        assert complete(s, job.id, t2, "w2", REPORT, "reports/x/report.html")
    with S() as s:
        assert not complete(s, job.id, t2, "w2", REPORT, None)  # and never twice
        case = s.get(Case, case_id)
        assert case.status == "assessed" and case.report_json == REPORT and case.report_job_id == job.id
        assert s.scalar(select(func.count(Finding.id)).where(Finding.case_id == case_id)) == 1
        done = s.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.case_id == case_id,
                                                               AuditEvent.action == "job.completed"))
        assert done == 1
        assert s.scalar(select(func.count(Job.id)).where(Job.status == "running")) == 0


def test_queue_gives_up_after_max_attempts(tmp_path, database_url):
    from carcheck.serve.jobs import claim

    client, app, keys = make(tmp_path, database_url, job_max_attempts=2)
    case_id = _queued_case(client, app, keys["acme"])
    S = app.state.sessions
    for i in range(2):
        with S() as s:
            job, _ = claim(s, f"w{i}", 30)
            s.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
            s.commit()
    with S() as s:
        assert claim(s, "w9", 30) is None
        job = s.get(Job, job.id)
        assert job.status == "failed" and "gave up after 2 attempt" in job.error
        assert s.get(Case, case_id).status == "failed"
    # a new assessment may be queued after a failure
    cid = client.get("/v1/cases", headers=auth(keys["acme"])).json()["items"][0]["id"]
    assert client.post(f"/v1/cases/{cid}/assessments", headers=auth(keys["acme"])).status_code == 202


def test_callback_retries_with_backoff(tmp_path, database_url):
    import httpx

    from carcheck.serve.callbacks import deliver_callback, due_callbacks
    from carcheck.serve.jobs import claim, complete

    client, app, keys = make(tmp_path, database_url, callback_backoff_seconds=0.0, callback_max_attempts=3,
                             allowed_callback_hosts={"127.0.0.1"})
    key = keys["acme"]
    cid = new_case(client, key, "cb", callback_url="http://127.0.0.1:9/hook")
    client.post(f"/v1/cases/{cid}/photos", files=[("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))], headers=auth(key))
    client.post(f"/v1/cases/{cid}/assessments", headers=auth(key))
    calls = []

    def handler(request):
        calls.append((request.headers["x-carcheck-attempt"], request.read()))
        return httpx.Response(500 if len(calls) < 2 else 204)

    mock = httpx.Client(transport=httpx.MockTransport(handler))
    S = app.state.sessions
    with S() as s:
        job, tok = claim(s, "w", 30)
        complete(s, job.id, tok, "w", REPORT, None)
    states = []
    for _ in range(4):
        with S() as s:
            due = due_callbacks(s)
        for jid, _tenant in due:
            states.append(deliver_callback(S, jid, app.state.settings, client=mock))
    assert states == ["pending", "delivered"] and [a for a, _ in calls] == ["1", "2"]
    import json

    body = json.loads(calls[-1][1])
    assert body["case_id"] == cid and body["status"] == "assessed" and body["external_id"] == "cb"
    with S() as s:
        assert s.get(Job, job.id).callback_state == "delivered"
        errors = [e.detail["error"] for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "callback.error"))]
    assert errors == ["delivery failed: HTTP 5xx"]  # the status class, nothing of the receiver's own text
