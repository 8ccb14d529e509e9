"""Review over the API and the pages' server side (issue 18): decisions with before -> after in the
audit log, the reviewed state in the case JSON, closing rules, tenant isolation, CSRF, login cookies,
escaping, the users CLI, statistics and the suggested review threshold."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from test_review_support import api_key, assessed_case, make_app, reviewer

PASSWORD = "correct horse battery"


@pytest.fixture()
def env(tmp_path):
    app, settings = make_app(tmp_path)
    client = TestClient(app)
    key = api_key(app, "tenant-a")
    case_id = assessed_case(client, key, n_findings=10)
    return app, client, key, case_id


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _login(client, email, password=PASSWORD):
    r = client.get("/login")
    tok = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": tok},
                       follow_redirects=False)


def _csrf(page_html):
    return re.search(r'name="csrf_token" value="([^"]+)"', page_html).group(1)


def test_decisions_are_audited_with_before_after_and_shown_in_the_case_json(env):
    app, client, key, case_id = env
    review = client.get(f"/v1/cases/{case_id}", headers=_h(key)).json()["review"]
    assert review["state"] == "in_review" and review["counts"]["pending"] == 10
    f0, f1, f2 = review["findings"][:3]
    r = client.post(f"/v1/cases/{case_id}/findings/{f0['id']}/review", json={"action": "confirm", "severity": "severe"},
                    headers=_h(key))
    assert r.status_code == 200 and r.json()["state"] == "confirmed" and r.json()["severity"] == "severe"
    new_damage = next(d for d in ("dent", "scratch", "broken") if d != f1["damage"])
    r = client.post(f"/v1/cases/{case_id}/findings/{f1['id']}/review",
                    json={"action": "edit", "damage": new_damage, "note": "looks like a dent"}, headers=_h(key))
    assert r.json()["state"] == "corrected" and r.json()["damage"] == new_damage
    r = client.post(f"/v1/cases/{case_id}/findings/{f2['id']}/review", json={"action": "reject"}, headers=_h(key))
    assert r.json()["state"] == "rejected"
    # unknown damage type: refused, nothing recorded
    r = client.post(f"/v1/cases/{case_id}/findings/{f2['id']}/review", json={"action": "edit", "damage": "rust"},
                    headers=_h(key))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_damage"
    audit = client.get(f"/v1/cases/{case_id}/audit", headers=_h(key)).json()
    rev = [e for e in audit if e["action"].startswith("review.")]
    assert [e["action"] for e in rev] == ["review.confirm", "review.edit", "review.reject"]
    assert rev[1]["detail"]["before"]["damage"] == f1["damage"] and rev[1]["detail"]["after"]["damage"] == new_damage
    assert rev[1]["detail"]["before"]["state"] == "pending" and rev[1]["detail"]["after"]["state"] == "corrected"
    assert all(e["actor"].startswith("key:") for e in rev)
    # the stored report is untouched; the review sits beside it
    case = client.get(f"/v1/cases/{case_id}", headers=_h(key)).json()
    assert case["report"]["findings"][1]["damage"] == f1["damage"]
    assert case["review"]["findings"][1]["damage"] == new_damage
    assert case["review"]["counts"] == {"confirmed": 1, "corrected": 1, "rejected": 1, "accepted": 0, "pending": 7,
                                        "added": 0}
    from carcheck.serve.db.models import Finding
    from carcheck.serve.review.models import ReviewDecision

    with app.state.sessions() as s:
        assert s.get(Finding, f1["id"]).review_state == "edited"
        assert s.query(ReviewDecision).count() == 3


def test_add_damage_and_case_reviewed(env):
    app, client, key, case_id = env
    case = client.get(f"/v1/cases/{case_id}", headers=_h(key)).json()
    photo = case["photos"][3]
    r = client.post(f"/v1/cases/{case_id}/damages", headers=_h(key), json={
        "photo_id": photo["id"], "damage": "scratch", "part": "hood", "bbox_xywh": [700, 500, 400, 400],
        "polygon": [700, 500, 790, 510, 760, 590]})
    assert r.status_code == 201, r.text
    assert r.json()["bbox_xywh"] == [700, 500, photo["width"] - 700, photo["height"] - 500]  # clipped to the photo
    r = client.post(f"/v1/cases/{case_id}/damages", headers=_h(key), json={
        "photo_id": photo["id"], "damage": "scratch", "part": "hood", "bbox_xywh": [5000, 5000, 10, 10]})
    assert r.status_code == 422
    # closing needs a decision on every flagged finding
    r = client.post(f"/v1/cases/{case_id}/review/complete", headers=_h(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "findings_pending"
    flagged = [f for f in case["review"]["findings"] if f["predicted"]["needs_review"]]
    assert sorted(r.json()["error"]["detail"]["findings"]) == sorted(f["id"] for f in flagged)
    for f in flagged:
        client.post(f"/v1/cases/{case_id}/findings/{f['id']}/review", json={"action": "confirm"}, headers=_h(key))
    r = client.post(f"/v1/cases/{case_id}/review/complete", headers=_h(key))
    assert r.status_code == 200 and r.json()["state"] == "reviewed"
    n_unflagged = 10 - len(flagged)
    assert r.json()["counts"]["accepted"] == n_unflagged and r.json()["counts"]["pending"] == 0
    # closed: no more decisions
    r = client.post(f"/v1/cases/{case_id}/findings/{flagged[0]['id']}/review", json={"action": "reject"},
                    headers=_h(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "case_reviewed"
    actions = [e["action"] for e in client.get(f"/v1/cases/{case_id}/audit", headers=_h(key)).json()]
    assert actions.count("review.accept") == n_unflagged and actions[-1] == "review.case_reviewed"


def test_tenant_isolation_api_and_pages(env):
    app, client, key, case_id = env
    key_b = api_key(app, "tenant-b")
    case_b = assessed_case(client, key_b, n_findings=3, external_id="claim-b")
    fid = client.get(f"/v1/cases/{case_b}/review", headers=_h(key_b)).json()["findings"][0]["id"]
    for method, url, body in (("get", f"/v1/cases/{case_b}/review", None), ("get", f"/v1/cases/{case_b}/audit", None),
                              ("post", f"/v1/cases/{case_b}/findings/{fid}/review", {"action": "reject"}),
                              ("post", f"/v1/cases/{case_b}/review/complete", None)):
        r = getattr(client, method)(url, headers=_h(key), **({"json": body} if body else {}))
        assert r.status_code == 404, (url, r.status_code)
    # a finding of B's case addressed through A's case: 404 too
    r = client.post(f"/v1/cases/{case_id}/findings/{fid}/review", json={"action": "reject"}, headers=_h(key))
    assert r.status_code == 404
    reviewer(app, "tenant-a", "a@example.org")
    assert _login(client, "a@example.org").status_code == 303
    assert client.get(f"/review/cases/{case_id}").status_code == 200
    assert client.get(f"/review/cases/{case_b}").status_code == 404
    page = client.get(f"/review/cases/{case_id}").text
    assert page.count('class="car-diagram"') == 1 and 'data-part="back_bumper"' in page  # the case's car diagram
    r = client.post(f"/review/cases/{case_b}/findings/{fid}", data={"csrf_token": _csrf(page), "action": "reject"},
                    follow_redirects=False)
    assert r.status_code == 404
    assert "claim-b" not in client.get("/review?status=all").text
    assert client.get(f"/v1/cases/{case_b}/review", headers=_h(key_b)).json()["counts"]["rejected"] == 0


def test_login_cookie_csrf_and_logout(env):
    app, client, key, case_id = env
    reviewer(app, "tenant-a", "a@example.org")
    assert client.get("/review", follow_redirects=False).status_code == 303  # not logged in: to /login
    r = _login(client, "a@example.org", "wrong password!!")
    assert r.status_code == 200 and "Wrong e-mail or password" in r.text
    r = _login(client, "a@example.org")
    cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith("carcheck_session=")][0].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # plain http here
    page = client.get(f"/review/cases/{case_id}")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    fid = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"][0]["id"]
    url = f"/review/cases/{case_id}/findings/{fid}"
    assert client.post(url, data={"action": "confirm"}, follow_redirects=False).status_code == 403
    assert client.post(url, data={"action": "confirm", "csrf_token": "x" * 43},
                       follow_redirects=False).status_code == 403
    assert client.post(f"/review/cases/{case_id}/complete", data={}, follow_redirects=False).status_code == 403
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
    r = client.post(url, data={"action": "confirm", "csrf_token": _csrf(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    state = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()
    assert state["findings"][0]["state"] == "confirmed" and state["findings"][0]["actor"].startswith("user:")
    # a login form posted without its token is refused as well
    fresh = TestClient(app)
    assert fresh.post("/login", data={"email": "a@example.org", "password": PASSWORD},
                      follow_redirects=False).status_code == 403
    # https: the cookie is Secure
    secure = TestClient(app, base_url="https://testserver")
    r = _login(secure, "a@example.org")
    assert "secure" in [c for c in r.headers.get_list("set-cookie") if c.startswith("carcheck_session=")][0].lower()
    client.post("/logout", data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
    assert client.get(f"/review/cases/{case_id}", follow_redirects=False).status_code == 303  # session revoked


def test_hostile_file_name_and_note_are_escaped(tmp_path):
    app, settings = make_app(tmp_path)
    client = TestClient(app)
    key = api_key(app, "tenant-a")
    hostile = '<img src=x onerror=alert(1)>.png'
    case_id = assessed_case(client, key, n_findings=2, names={"167111-04.png": hostile})
    reviewer(app, "tenant-a", "a@example.org")
    _login(client, "a@example.org")
    page = client.get(f"/review/cases/{case_id}").text
    fid = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"][0]["id"]
    note = '</div><script>alert("note")</script>'
    client.post(f"/review/cases/{case_id}/findings/{fid}", data={"action": "edit", "note": note,
                                                                 "csrf_token": _csrf(page)})
    page = client.get(f"/review/cases/{case_id}").text
    assert "<script>alert" not in page and "<img src=x onerror" not in page
    assert "&lt;/div&gt;&lt;script&gt;alert(&#34;note&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page


def test_users_cli_creates_an_argon2_account(tmp_path):
    from typer.testing import CliRunner

    from carcheck.cli import app as cli

    data = tmp_path / "data"
    r = CliRunner().invoke(cli, ["users", "create", "--tenant", "t", "--email", "R@Example.org", "--role", "admin",
                                 "--data-dir", str(data), "--password-stdin"], input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    r2 = CliRunner().invoke(cli, ["users", "create", "--tenant", "t", "--email", "r@example.org",
                                  "--data-dir", str(data), "--password-stdin"], input=PASSWORD + "\n")
    assert r2.exit_code == 2 and "already has an account" in r2.output
    r3 = CliRunner().invoke(cli, ["users", "create", "--tenant", "t", "--email", "s@example.org",
                                  "--data-dir", str(data), "--password-stdin"], input="short\n")
    assert r3.exit_code == 2 and "at least" in r3.output
    from carcheck.serve.db.session import make_engine, session_factory, sqlite_url
    from carcheck.serve.review.accounts import authenticate
    from carcheck.serve.review.models import Reviewer

    with session_factory(make_engine(sqlite_url(data)))() as s:
        u = s.query(Reviewer).one()
        assert u.password_hash.startswith("$argon2id$") and PASSWORD not in u.password_hash and u.role == "admin"
        assert authenticate(s, "r@example.org", PASSWORD) is not None
        assert authenticate(s, "r@example.org", PASSWORD + "x") is None


def test_stats_and_suggested_threshold(env):
    """Reviewer decisions on the real report's findings: shares per damage type, and the lowest
    C_refined threshold whose findings above it reach the target precision."""
    app, client, key, case_id = env
    findings = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"]
    ranked = sorted(findings, key=lambda f: -f["predicted"]["c_refined"])
    # the top 6 are right, then one wrong, then right, then two wrong
    verdicts = ["confirm"] * 6 + ["reject", "confirm", "reject", "reject"]
    for f, v in zip(ranked, verdicts):
        client.post(f"/v1/cases/{case_id}/findings/{f['id']}/review", json={"action": v}, headers=_h(key))
    # not reviewed yet: no statistics
    assert client.get("/v1/review/stats", headers=_h(key)).json()["reviewed_cases"] == 0
    assert client.post(f"/v1/cases/{case_id}/review/complete", headers=_h(key)).status_code == 200
    st = client.get("/v1/review/stats?target=0.85&min_support=5", headers=_h(key)).json()
    assert st["reviewed_cases"] == 1
    (version, g), = st["by_model_version"].items()
    assert g["decided"] == 10 and g["confirmed"] == 7 and g["rejected"] == 3 and g["precision"] == 0.7
    assert sum(s["decided"] for s in st["by_damage"].values()) == 10
    sug = st["suggestions"][0]
    # top 8: 7 right of 8 = 0.875 >= 0.85 (top 9: 7/9 = 0.78 is not)
    assert sug["support"] == 8 and sug["precision"] == 0.875
    assert sug["threshold"] == ranked[7]["predicted"]["c_refined"] and sug["model_version"] == version
    assert st["suggestions"][0]["review_share"] == 0.2
    top6 = client.get("/v1/review/stats?target=0.99&min_support=5", headers=_h(key)).json()["suggestions"][0]
    assert top6["support"] == 6 and top6["precision"] == 1.0  # the 6 right ones above the first wrong one
    none = client.get("/v1/review/stats?target=0.99&min_support=7", headers=_h(key)).json()["suggestions"][0]
    assert none["threshold"] is None and "no threshold" in none["reason"]
    from typer.testing import CliRunner

    from carcheck.cli import app as cli

    r = CliRunner().invoke(cli, ["review", "stats", "--data-dir", str(app.state.settings.data_dir), "--json",
                                 "--target-precision", "0.85", "--min-support", "5"])
    assert r.exit_code == 0, r.output
    import json

    assert json.loads(r.output)["suggestions"][0]["support"] == 8
