"""Compare two cases in the service (issue 19): ``GET /v1/cases/{after}/compare/{before}`` returns the JSON
``carcheck compare`` writes (pipeline/compare.py on the two stored reports), ``.../compare.html`` the
side-by-side page with the photos; both cases must be the caller's (404 otherwise, nothing leaks), and a
case that is not assessed answers 409. In process (TestClient, no workers), the stored report of a real
assessment (tests/fixtures/review_report_panamera.json, via test_review_support.assessed_case); on SQLite
and, when CARCHECK_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import copy
import re

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from test_review_support import api_key, assessed_case  # noqa: E402



def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _edit_before(report: dict) -> dict:
    """The pickup side: hood clean (-> new after), the wheel never photographed and clean (-> not comparable),
    the front bumper's dent small instead of medium (-> changed)."""
    r = copy.deepcopy(report)
    r["findings"] = [f for f in r["findings"] if f["part"] not in ("hood", "wheel")]
    for f in r["findings"]:
        if f["part"] == "front_bumper" and f["damage"] == "dent":
            f["size_class"] = "small"
    for p in r["photos"]:
        p["visible_parts"] = [v for v in p.get("visible_parts", []) if v != "wheel"]
    return r


def _set_report(app, case_id: str, report: dict) -> None:
    from carcheck.serve.db.models import Case

    with app.state.sessions() as s:
        case = s.query(Case).filter_by(public_id=case_id).one()
        case.report_json = report
        s.commit()


def _stored(app, case_id: str) -> dict:
    from carcheck.serve.db.models import Case

    with app.state.sessions() as s:
        return s.query(Case).filter_by(public_id=case_id).one().report_json


def _assert_error(r, status, code):
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == code, r.text


@pytest.fixture()
def env(tmp_path, database_url):
    from carcheck.serve.app import create_app
    from carcheck.serve.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0, rate_limit=1000,
                              rate_burst=1000))
    client = TestClient(app)
    key, other = api_key(app, "rental-a"), api_key(app, "rental-b")
    after = assessed_case(client, key, external_id="return")
    before = assessed_case(client, key, external_id="pickup")
    _set_report(app, before, _edit_before(_stored(app, before)))
    return app, client, key, other, before, after


def test_compare_json_is_the_cli_comparison_of_the_stored_reports(env):
    from carcheck.pipeline.compare import compare_cases
    from carcheck.schema import CaseReport

    app, client, key, _, before, after = env
    r = client.get(f"/v1/cases/{after}/compare/{before}", headers=_h(key))
    assert r.status_code == 200, r.text
    got = r.json()
    status = {p["part"]: p for p in got["parts"]}
    assert got["new_damage"] == ["hood"] and status["hood"]["status"] == "new"
    assert got["changed"] == ["front_bumper"] and "dent grew from small to medium" in status["front_bumper"]["reason"]
    assert status["wheel"]["status"] == "not comparable" and "wheel" in got["not_comparable"]
    assert status["wheel"]["reason"] == "damaged after but not visible in any photo before"
    assert status["back_bumper"]["status"] == "pre-existing"
    assert got["before"]["case_id"] == before and got["after"]["case_id"] == after
    # exactly what carcheck compare writes for these two report.json files (pipeline/compare.py), bar the time
    want = compare_cases(CaseReport.model_validate(_stored(app, before)),
                         CaseReport.model_validate(_stored(app, after)),
                         f"/v1/cases/{before}", f"/v1/cases/{after}").model_dump(mode="json")
    got.pop("created"), want.pop("created")
    assert got == want
    assert got["same_vehicle"]["verdict"] == "unknown"  # the report's car is outside the make/model head's scope
    # the other way round the hood damage was there at pickup and is gone: pre-existing, for review
    back = client.get(f"/v1/cases/{before}/compare/{after}", headers=_h(key)).json()
    hood = next(p for p in back["parts"] if p["part"] == "hood")
    assert back["new_damage"] == [] and hood["status"] == "pre-existing" and hood["needs_review"]
    # a case against itself: no new damage
    same = client.get(f"/v1/cases/{after}/compare/{after}", headers=_h(key)).json()
    assert same["new_damage"] == [] and same["changed"] == []


def test_compare_html_shows_both_sides_with_photos(env):
    app, client, key, _, before, after = env
    url = f"/v1/cases/{after}/compare/{before}/compare.html"
    r = client.get(url, headers=_h(key))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "hood" in page and before in page and after in page
    imgs = re.findall(r'src="data:image/jpeg;base64,', page)
    assert len(imgs) >= 2, "the page shows the photos of both sides"
    again = client.get(url, headers=_h(key))
    assert again.text == page  # written once per pair of assessments


def test_other_tenant_404_and_not_assessed_409(env):
    app, client, key, other, before, after = env
    for path in (f"/v1/cases/{after}/compare/{before}", f"/v1/cases/{after}/compare/{before}/compare.html"):
        r = client.get(path, headers=_h(other))
        _assert_error(r, 404, "not_found")
        assert "hood" not in r.text and "findings" not in r.text
    # the other tenant's own assessed case cannot be compared with ours, in either position
    theirs = assessed_case(client, other, external_id="theirs")
    for path in (f"/v1/cases/{after}/compare/{theirs}", f"/v1/cases/{theirs}/compare/{after}"):
        _assert_error(client.get(path, headers=_h(key)), 404, "not_found")
        _assert_error(client.get(path + "/compare.html", headers=_h(key)), 404, "not_found")
    _assert_error(client.get(f"/v1/cases/{after}/compare/case_nonexistent", headers=_h(key)), 404, "not_found")
    # a case of ours that is not assessed: 409 naming it, either side
    r = client.post("/v1/cases", json={"external_id": "open-one"}, headers=_h(key))
    fresh = r.json()["id"]
    for path in (f"/v1/cases/{after}/compare/{fresh}", f"/v1/cases/{fresh}/compare/{after}"):
        r = client.get(path, headers=_h(key))
        _assert_error(r, 409, "not_assessed")
        assert r.json()["error"]["detail"] == {"case_id": fresh, "status": "open"}
        _assert_error(client.get(path + "/compare.html", headers=_h(key)), 409, "not_assessed")
    # queued again for a re-assessment: its old report is not the case's current one
    assert client.post(f"/v1/cases/{before}/assessments", headers=_h(key)).status_code == 202
    r = client.get(f"/v1/cases/{after}/compare/{before}", headers=_h(key))
    _assert_error(r, 409, "not_assessed")
    assert r.json()["error"]["detail"]["status"] == "queued"
    assert client.get(f"/v1/cases/{after}/compare/{before}", headers={}).status_code == 401
