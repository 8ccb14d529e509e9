"""Damage instances in review (issue 27 item 3): which instances are a finding's, a decision that rejects
some of them (validated, stored, audited), the case page drawing them as numbered outlines with keep /
reject checkboxes, and the COCO export writing their outlines as polygons (kept) and negatives
(rejected); a report before 1.14 (no instances) keeps the detection boxes throughout.

The report with instances is tests/fixtures/review_report_panamera_instances.json (schema 1.14, a real
``carcheck assess`` run, photos 04-06 of the salvage Panamera; see test_review_support)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from test_review_support import FIXTURE, INSTANCES_FIXTURE, api_key, assessed_case, make_app, reviewer

PASSWORD = "correct horse battery"


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _photos(fixture):
    """(stand-in photo, report entry) of a fixture report, as ``report_photos`` pairs them."""
    from carcheck.schema import CaseReport

    report = CaseReport.model_validate(json.loads(fixture.read_text()))
    return report, [(SimpleNamespace(public_id=f"photo_{i:02d}", filename=e.path), e)
                    for i, e in enumerate(report.photos)]


def test_a_findings_instances_are_those_of_its_photos_type_and_part():
    from carcheck.serve.review.media import finding_instances, instance_key

    report, photos = _photos(INSTANCES_FIXTURE)
    by = {(f.part, f.damage): f.model_dump() for f in report.findings}
    ids = lambda f: [(p.filename, i.id) for p, i in finding_instances(f, photos)]  # noqa: E731
    # photo 04: lamp_broken 2 lies on tailgate and back_bumper, 5 on back_bumper and no part, 4 on no part
    assert ids(by["back_bumper", "lamp_broken"]) == [("167111-04.png", 2), ("167111-04.png", 5)]
    assert ids(by["tailgate", "lamp_broken"]) == [("167111-04.png", 2)]
    assert ids(by["unassigned", "lamp_broken"]) == [("167111-04.png", 4), ("167111-04.png", 5)]
    # a finding over two photos: the instances of both, in photo order
    assert {p for p, _ in ids(by["unassigned", "dent"])} == {"167111-04.png", "167111-06.png"}
    # the relation itself, for every finding: same photos, same type, its part among the instance's parts
    for f in by.values():
        want = [(p.filename, i.id) for p, e in photos if e.path in f["photos"] for i in e.instances
                if i.damage == f["damage"] and f["part"] in i.parts]
        assert ids(f) == want and want, f
    # an instance of another type, or in a photo the finding does not name, is not the finding's
    assert ids({**by["back_bumper", "lamp_broken"], "damage": "dent"}) == [("167111-04.png", 1)]
    assert ids({**by["back_bumper", "lamp_broken"], "photos": ["167111-05.png"]}) == []
    assert instance_key(photos[0][0], photos[0][1].instances[0]) == "photo_00:1"
    # a report before 1.14 has none
    old, old_photos = _photos(FIXTURE)
    assert all(finding_instances(f.model_dump(), old_photos) == [] for f in old.findings)


@pytest.fixture()
def inst_env(tmp_path, database_url):
    """A case assessed with the 1.14 fixture report, on SQLite and on PostgreSQL (where configured)."""
    app, settings = make_app(tmp_path, database_url)
    client = TestClient(app)
    key = api_key(app, "tenant-a")
    case_id = assessed_case(client, key, fixture=INSTANCES_FIXTURE, external_id="claim-inst")
    fs = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"]
    by = {(f["predicted"]["part"], f["predicted"]["damage"]): f for f in fs}
    return app, client, key, case_id, by


def _decide(client, key, case_id, f, **body):
    return client.post(f"/v1/cases/{case_id}/findings/{f['id']}/review", json=body, headers=_h(key))


def test_decision_rejects_instances_validated_stored_and_audited(inst_env):
    app, client, key, case_id, by = inst_env
    bb = by["back_bumper", "lamp_broken"]
    assert len(bb["instances"]) == 2 and bb["rejected_instances"] == []
    keep, drop = bb["instances"]
    assert re.fullmatch(r"photo_[0-9a-f]+:2", keep) and drop.endswith(":5")
    r = _decide(client, key, case_id, bb, action="confirm", rejected_instances=[drop])
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "confirmed" and r.json()["rejected_instances"] == [drop]
    from carcheck.serve.review.models import FindingReview, ReviewDecision

    with app.state.sessions() as s:
        assert s.query(FindingReview).filter_by(finding_id=bb["id"]).one().rejected_instances == [drop]
        n_decisions = s.query(ReviewDecision).count()
    audit = [e for e in client.get(f"/v1/cases/{case_id}/audit", headers=_h(key)).json()
             if e["action"].startswith("review.")]
    assert audit[-1]["detail"]["before"]["rejected_instances"] == []
    assert audit[-1]["detail"]["after"]["rejected_instances"] == [drop]
    # an instance of another finding (glass on the front glass, photo 05), or a malformed name: 422, nothing stored
    foreign = by["front_glass", "glass_shatter"]["instances"][0]
    r = _decide(client, key, case_id, bb, action="confirm", rejected_instances=[foreign])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_instance"
    assert "rejected_instances" in r.json()["error"]["message"] and foreign in r.json()["error"]["message"]
    r = _decide(client, key, case_id, bb, action="reject", rejected_instances=[foreign])  # also with a rejection
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_instance"
    r = _decide(client, key, case_id, bb, action="confirm", rejected_instances=["instance 5"])
    assert r.status_code == 422 and "rejected_instances" in r.text
    # every instance rejected while the finding is kept: that is a rejection of the finding
    r = _decide(client, key, case_id, bb, action="confirm", rejected_instances=[keep, drop])
    assert r.status_code == 422 and "reject the finding" in r.json()["error"]["message"]
    with app.state.sessions() as s:
        assert s.query(ReviewDecision).count() == n_decisions
        assert s.query(FindingReview).filter_by(finding_id=bb["id"]).one().rejected_instances == [drop]
    # an edit leaves the instances as they were; rejecting the finding rejects them all; confirming it again
    # without naming any keeps them all
    assert _decide(client, key, case_id, bb, action="edit", note="lamp").json()["rejected_instances"] == [drop]
    assert _decide(client, key, case_id, bb, action="reject").json()["rejected_instances"] == [keep, drop]
    r = _decide(client, key, case_id, bb, action="confirm")
    assert r.json()["state"] == "confirmed" and r.json()["rejected_instances"] == []
    # a finding of a report without instances: none to name
    client_old_case = assessed_case(client, key, n_findings=2, external_id="claim-old")
    old = client.get(f"/v1/cases/{client_old_case}/review", headers=_h(key)).json()["findings"][0]
    assert old["instances"] == [] and old["rejected_instances"] == []
    r = _decide(client, key, client_old_case, old, action="confirm", rejected_instances=[drop])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_instance"
    assert _decide(client, key, client_old_case, old, action="confirm", rejected_instances=[]).status_code == 200


def _login_page(client, case_id):
    r = client.get("/login")
    tok = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
    client.post("/login", data={"email": "a@example.org", "password": PASSWORD, "csrf_token": tok})
    return client.get(f"/review/cases/{case_id}")


def test_case_page_outlines_and_numbers_instances_and_its_form_rejects_them(inst_env):
    app, client, key, case_id, by = inst_env
    reviewer(app, "tenant-a", "a@example.org")
    bb = by["back_bumper", "lamp_broken"]
    keep, drop = bb["instances"]
    page = _login_page(client, case_id).text
    groups = re.findall(r'<g class="inst st-(\w+)" data-finding="(\d+)" data-instance="(\d+)">(.*?)</g>', page, re.S)
    mine = [g for g in groups if g[1] == str(bb["id"])]
    assert [g[2] for g in mine] == ["2", "5"] and all(g[0] == "pending" for g in mine)
    for _, _, number, inner in mine:
        assert inner.startswith(f"<title>lamp_broken · back_bumper · instance {number}</title>")
        assert re.search(r'<polygon class="outline" points="(\d+(\.\d+)?,\d+(\.\d+)? ){3,}"', inner)
        assert re.search(rf'<text class="no"[^>]*>{number}</text>', inner) and '<rect class="box' in inner
    # every instance of every finding is drawn (one per finding it belongs to), with no detection box left over
    n_inst = sum(len(f["instances"]) for f in by.values())
    assert len(groups) == n_inst
    assert not re.search(r'<rect class="box st-\w+" data-finding', re.sub(r'<g class="inst.*?</g>', "", page, flags=re.S))
    # the confirm form: one checkbox per instance, checked = kept
    boxes = re.findall(r'name="kept" value="([^"]+)"[^>]*?( checked)?>', page)
    assert (keep, " checked") in boxes and (drop, " checked") in boxes
    tok = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post(f"/review/cases/{case_id}/findings/{bb['id']}", follow_redirects=False,
                    data={"csrf_token": tok, "action": "confirm", "instance": [keep, drop], "kept": [keep]})
    assert r.status_code == 303
    assert client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"][
        [f["id"] for f in by.values()].index(bb["id"])]["rejected_instances"] == [drop]
    page = client.get(f"/review/cases/{case_id}?sel={bb['id']}").text
    states = {g[2]: g[0] for g in re.findall(r'<g class="inst st-(\w+)" data-finding="(\d+)" data-instance="(\d+)">',
                                             page) if g[1] == str(bb["id"])}
    assert states == {"2": "confirmed", "5": "rejected"}
    assert re.search(rf'name="kept" value="{drop}"[^>]*>', page).group(0).endswith('data-instance="5">')  # unchecked
    # a forged instance name from the form: the page again with the error, 422
    r = client.post(f"/review/cases/{case_id}/findings/{bb['id']}",
                    data={"csrf_token": tok, "action": "confirm", "instance": ["photo_00:1"], "kept": []})
    assert r.status_code == 422 and "rejected_instances" in r.text


def test_case_page_of_a_report_without_instances_keeps_detection_boxes(tmp_path):
    app, settings = make_app(tmp_path)
    client = TestClient(app)
    key = api_key(app, "tenant-a")
    case_id = assessed_case(client, key, n_findings=4)
    reviewer(app, "tenant-a", "a@example.org")
    page = _login_page(client, case_id).text
    assert '<g class="inst' not in page and 'name="kept"' not in page
    assert len(re.findall(r'<rect class="box st-pending" data-finding="\d+"', page)) >= 4


def _close(client, key, case_id, fs):
    for f in fs:
        if f["state"] == "pending" and f["predicted"]["needs_review"]:
            assert _decide(client, key, case_id, f, action="confirm").status_code == 200
    assert client.post(f"/v1/cases/{case_id}/review/complete", headers=_h(key)).status_code == 200


def _export(app, tmp_path):
    from carcheck.serve.review.export import export_coco

    with app.state.sessions() as s:
        export_coco(s, app.state.store, tmp_path / "export")
    return json.loads((tmp_path / "export" / "annotations.json").read_text())


def test_export_writes_kept_instances_as_polygons_and_rejected_ones_as_negatives(inst_env, tmp_path, monkeypatch):
    app, client, key, case_id, by = inst_env
    monkeypatch.setattr("carcheck.serve.storage.DERIVED_MAX_SIDE", 500)  # exported images smaller than the photos
    bb, tg, un = by["back_bumper", "lamp_broken"], by["tailgate", "lamp_broken"], by["unassigned", "lamp_broken"]
    keep, drop = bb["instances"]
    assert _decide(client, key, case_id, bb, action="confirm", rejected_instances=[drop]).status_code == 200
    assert _decide(client, key, case_id, un, action="reject").status_code == 200  # instances 4 and 5 of photo 04
    fs = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"]
    _close(client, key, case_id, fs)
    case = client.get(f"/v1/cases/{case_id}", headers=_h(key)).json()
    data = _export(app, tmp_path)
    cat = {c["id"]: c["name"] for c in data["categories"]}
    photo_id = keep.split(":")[0]
    entry = next(p for p in case["report"]["photos"] if p["path"].startswith(photo_id))
    inst = {i["id"]: i for i in entry["instances"]}
    image = next(im for im in data["images"] if im["carcheck_photo"] == photo_id)
    sx, sy = image["width"] / entry["width"], image["height"] / entry["height"]
    assert sx < 0.7 and sy < 0.7  # the scale is tested
    mine = [a for a in data["annotations"] if a.get("photo") == photo_id]
    # instance 2 lies on the tailgate and the bumper, both findings keep it: one annotation, for the tailgate
    # (most of its pixels), its outline scaled to the exported image
    assert inst[2]["parts"][:2] == ["tailgate", "back_bumper"]
    two = [a for a in mine if a["instance"] == 2]
    assert len(two) == 1 and two[0]["finding"] == tg["id"] and two[0]["shape"] == "polygon"
    assert cat[two[0]["category_id"]] == "lamp_broken" and two[0]["review_state"] == "confirmed"
    seg = two[0]["segmentation"][0]
    want = [v * (sx if i % 2 == 0 else sy) for i, v in enumerate(inst[2]["polygon"])]
    assert len(seg) == len(want) and max(abs(a - b) for a, b in zip(seg, want)) < 0.01
    b = inst[2]["bbox_xywh"]
    assert two[0]["bbox"] == pytest.approx([b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy], abs=0.01)
    xs, ys = seg[0::2], seg[1::2]
    shoelace = abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2
    assert two[0]["area"] == pytest.approx(shoelace, abs=0.01) and shoelace < b[2] * sx * b[3] * sy
    # 5: rejected on the bumper finding, and its other finding (no part) rejected: a negative; so is 4
    assert not [a for a in mine if a["instance"] in (4, 5)]
    negs = {n["instance"]: n for n in data["negatives"] if n.get("photo") == photo_id}
    assert set(negs) == {4, 5} and all(cat[n["category_id"]] == "lamp_broken" for n in negs.values())
    assert negs[5]["finding"] == bb["id"] and negs[5]["review_state"] == "rejected"
    # every finding of this report is written as instance outlines, none as detection boxes
    assert {a["shape"] for a in data["annotations"] if a.get("finding")} == {"polygon"}
    n_kept = len({(a["photo"], a["instance"]) for a in data["annotations"] if a.get("finding")})
    assert n_kept == len(data["annotations"]) and n_kept + len(negs) == sum(
        len(p["instances"]) for p in case["report"]["photos"])


def test_export_of_a_report_without_instances_writes_detection_boxes(tmp_path):
    app, settings = make_app(tmp_path)
    client = TestClient(app)
    key = api_key(app, "tenant-a")
    case_id = assessed_case(client, key, n_findings=4)
    fs = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"]
    assert _decide(client, key, case_id, fs[0], action="reject").status_code == 200
    fs = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"]
    _close(client, key, case_id, fs)
    data = _export(app, tmp_path)
    found = [a for a in data["annotations"] if a.get("finding")]
    assert found and all(a["shape"] == "box" and "instance" not in a for a in found)
    for a in found:
        x, y, w, h = a["bbox"]
        assert a["segmentation"] == [[x, y, x + w, y, x + w, y + h, x, y + h]]
    assert data["negatives"] and all(n["finding"] == fs[0]["id"] and "instance" not in n for n in data["negatives"])


def test_browser_draws_numbered_outlines_and_a_reviewer_unchecks_one(inst_env, browser):
    """In chromium: the selected finding's instances are highlighted (outline, box, number drawn); the
    reviewer unchecks one of its instances and presses ``c``: the finding is confirmed without it."""
    from test_review_browser import LiveServer, _login

    app, client, key, case_id, by = inst_env
    reviewer(app, "tenant-a", "rev@example.org")
    bb = by["back_bumper", "lamp_broken"]
    keep, drop = bb["instances"]
    with LiveServer(app) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _login(page, base, "rev@example.org")
        page.goto(f"{base}/review/cases/{case_id}?sel={bb['id']}")
        mine = page.locator(f"svg.boxes g.inst[data-finding='{bb['id']}']")
        assert mine.count() == 2
        assert page.locator(f"svg.boxes g.inst.hl").count() == 2                     # the selected finding's, only
        for i in range(2):
            g = mine.nth(i)
            assert g.is_visible() and g.locator("polygon.outline").is_visible()
            assert g.locator("text.no").text_content().strip() == g.get_attribute("data-instance")
            bbox = g.locator("polygon.outline").bounding_box()
            assert bbox["width"] > 2 and bbox["height"] > 2
        boxes = page.locator("li.finding.selected input.inst-keep")
        assert boxes.count() == 2 and boxes.nth(0).is_visible()
        boxes.nth(1).uncheck()
        with page.expect_navigation():
            page.keyboard.press("c")
        page.goto(f"{base}/review/cases/{case_id}?sel={bb['id']}")
        assert page.locator(f"g.inst.st-rejected[data-finding='{bb['id']}'][data-instance='5']").count() == 1
        # 5 is drawn for the bumper's finding and the no-part one: the selected finding's is drawn on top (last)
        order = page.evaluate("Array.from(document.querySelectorAll(\"g.inst[data-instance='5']\"))"
                              ".map(g => g.getAttribute('data-finding'))")
        assert len(order) == 2 and order[-1] == str(bb["id"])
        assert not page.locator(f"li.finding.selected input.inst-keep[value='{drop}']").is_checked()
    state = client.get(f"/v1/cases/{case_id}/review", headers=_h(key)).json()["findings"]
    mine = next(f for f in state if f["id"] == bb["id"])
    assert mine["state"] == "confirmed" and mine["rejected_instances"] == [drop]
