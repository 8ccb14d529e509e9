"""The service reads a case's stored report through ``carcheck.serve.reports.stored_report`` (issue 29 item 1):
validated into ``CaseReport``, so the case API, compare, the review API and UI and the reviewed-data export
see the schema, and a stored report this version cannot read answers one clear error (500 ``report_invalid``
naming the case and the field) instead of a KeyError or a silently wrong page. In process (TestClient, no
workers), the fixture report of a real assessment (test_review_support.assessed_case)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from test_review_support import api_key, assessed_case, make_app, reviewer  # noqa: E402

PASSWORD = "correct horse battery"


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _edit_stored(app, case_id: str, edit) -> None:
    """Change the stored report of ``case_id`` in the database, as another version or a hand edit would."""
    from carcheck.serve.db.models import Case

    with app.state.sessions() as s:
        case = s.query(Case).filter_by(public_id=case_id).one()
        report = dict(case.report_json)
        edit(report)
        case.report_json = report
        s.commit()


def _break(report: dict) -> None:
    report["photos"] = [dict(report["photos"][0], status="exploded"), *report["photos"][1:]]
    del report["summary"]


def _assert_invalid(r, case_id):
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["code"] == "report_invalid", r.text
    assert case_id in err["message"] and "photos[0].status" in err["message"] and "summary" in err["message"]
    assert {p["loc"] for p in err["detail"]["problems"]} >= {"photos[0].status", "summary"}


@pytest.fixture()
def env(tmp_path):
    app, _ = make_app(tmp_path)
    client = TestClient(app)
    key = api_key(app, "tenant-a")
    case_id = assessed_case(client, key, n_findings=4)
    return app, client, key, case_id


def test_stored_report_is_validated_and_served_as_the_schema(env):
    from carcheck.schema import CaseReport
    from carcheck.serve.db.models import Case
    from carcheck.serve.reports import stored_report

    app, client, key, case_id = env
    with app.state.sessions() as s:
        case = s.query(Case).filter_by(public_id=case_id).one()
        report = stored_report(case)
        assert isinstance(report, CaseReport) and report.case_id == case_id
        assert stored_report(case) is report  # validated once per loaded case
        stored = case.report_json
    # the API answers the validated report (the fixture is an older schema: the fields added since carry their
    # defaults; a report of this version comes back exactly as stored, see the round trip below)
    got = client.get(f"/v1/cases/{case_id}", headers=_h(key)).json()["report"]
    assert got == CaseReport.model_validate(stored).model_dump(mode="json")
    assert CaseReport.model_validate(got).model_dump(mode="json") == got
    # an older report missing fields the schema defaults is answered with the defaults filled in
    _edit_stored(app, case_id, lambda r: r.pop("parts", None))
    assert client.get(f"/v1/cases/{case_id}", headers=_h(key)).json()["report"]["parts"] == []


def test_invalid_stored_report_is_one_clear_error_everywhere(env):
    app, client, key, case_id = env
    other = assessed_case(client, key, n_findings=4, external_id="claim-2")
    _edit_stored(app, case_id, _break)
    # case API, review API, compare (either side): 500 report_invalid naming the case and the fields
    _assert_invalid(client.get(f"/v1/cases/{case_id}", headers=_h(key)), case_id)
    _assert_invalid(client.get(f"/v1/cases/{case_id}/review", headers=_h(key)), case_id)
    _assert_invalid(client.get(f"/v1/cases/{case_id}/compare/{other}", headers=_h(key)), case_id)
    _assert_invalid(client.get(f"/v1/cases/{other}/compare/{case_id}", headers=_h(key)), case_id)
    # the other case is unaffected
    assert client.get(f"/v1/cases/{other}", headers=_h(key)).status_code == 200
    # review UI: the queue still lists the case with a note; its page answers the error
    reviewer(app, "tenant-a", "ana@example.org", PASSWORD)
    tok = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"email": "ana@example.org", "password": PASSWORD, "csrf_token": tok},
                follow_redirects=False)
    queue = client.get("/review")
    assert queue.status_code == 200 and "stored report invalid" in queue.text
    _assert_invalid(client.get(f"/review/cases/{case_id}"), case_id)


def test_export_refuses_an_invalid_stored_report(env, tmp_path):
    from carcheck.serve.db.models import Case
    from carcheck.serve.reports import StoredReportError
    from carcheck.serve.review.export import export_coco

    app, client, key, case_id = env
    # close the review so the case is exported
    review = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()
    for f in review["findings"]:
        client.post(f"/v1/cases/{case_id}/findings/{f['id']}/review", json={"action": "confirm"}, headers=_h(key))
    r = client.post(f"/v1/cases/{case_id}/review/complete", headers=_h(key))
    assert r.status_code == 200, r.text
    _edit_stored(app, case_id, _break)
    with app.state.sessions() as s:
        tenant_id = s.query(Case).filter_by(public_id=case_id).one().tenant_id
        with pytest.raises(StoredReportError, match=rf"{case_id}.*photos\[0\]\.status"):
            export_coco(s, app.state.store, tmp_path / "coco", tenant_id)
