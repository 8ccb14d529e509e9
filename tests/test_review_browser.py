"""The review UI in a real browser (issue 18): Playwright driving Debian's chromium, headless.

A reviewer logs in, opens the queue, opens a 10-finding case, confirms one finding, rejects one, adds
a box, clears the rest with the keyboard and marks the case reviewed; the test counts every click and
key (target: <= 25 from the queue) and then checks the database, the audit log and the export. Also:
a hostile file name and note run no script and show literally. Screenshots of the queue and the case
page go to docs/ when CARCHECK_SCREENSHOTS=1 (bench/accuracy/review.py takes them on a real assessment).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from carcheck.report.pdf import find_chromium
from test_review_support import api_key, assessed_case, make_app, reviewer

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="no chromium (apt-get install chromium; .ci/run does)")
PASSWORD = "correct horse battery"


class LiveServer:
    """The app served by uvicorn in a thread on a free loopback port (stopped by the test)."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


class Counter:
    """Counts the reviewer's actions: each click, key press, drag and option choice is one."""

    def __init__(self, page) -> None:
        self.page, self.n, self.log = page, 0, []

    def click(self, selector: str) -> None:
        self.n += 1
        self.log.append(f"click {selector}")
        self.page.click(selector)

    def key(self, key: str) -> None:
        self.n += 1
        self.log.append(f"key {key}")
        self.page.keyboard.press(key)

    def select(self, selector: str, value: str) -> None:
        self.n += 1
        self.log.append(f"select {selector}={value}")
        self.page.select_option(selector, value)

    def drag(self, selector: str, fx0: float, fy0: float, fx1: float, fy1: float) -> None:
        self.n += 1
        self.log.append(f"drag {selector}")
        self.page.locator(selector).scroll_into_view_if_needed()
        box = self.page.locator(selector).bounding_box()
        m = self.page.mouse
        m.move(box["x"] + fx0 * box["width"], box["y"] + fy0 * box["height"])
        m.down()
        m.move(box["x"] + (fx0 + fx1) / 2 * box["width"], box["y"] + (fy0 + fy1) / 2 * box["height"], steps=3)
        m.move(box["x"] + fx1 * box["width"], box["y"] + fy1 * box["height"], steps=3)
        m.up()


def _login(page, base, email):
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_url(f"{base}/review")


def test_reviewer_clears_a_ten_finding_case(tmp_path, browser):
    app, settings = make_app(tmp_path)
    from fastapi.testclient import TestClient

    client = TestClient(app)
    key = api_key(app, "tenant-a")
    case_id = assessed_case(client, key, n_findings=10, external_id="claim-10")
    h = {"Authorization": f"Bearer {key}"}
    findings = client.get(f"/v1/cases/{case_id}/review", headers=h).json()["findings"]
    flagged = {f["id"] for f in findings if f["predicted"]["needs_review"]}
    reviewer(app, "tenant-a", "rev@example.org")
    dialogs = []
    with LiveServer(app) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _login(page, base, "rev@example.org")
        shots = os.environ.get("CARCHECK_SCREENSHOTS") == "1"
        if shots:
            page.screenshot(path=str(Path("docs") / "review_queue.png"), full_page=True)
        act = Counter(page)
        act.click(f"tr[data-case='{case_id}'] a")                   # open the case from the queue
        page.wait_for_url(f"{base}/review/cases/{case_id}*")
        def selected() -> int:
            return int(page.locator("li.finding.selected").get_attribute("data-id"))

        confirmed = selected()                                      # the page opens on an undecided flagged one
        assert confirmed in flagged
        with page.expect_navigation():
            act.key("c")                                              # confirm it
        rejected = selected()
        assert rejected != confirmed
        with page.expect_navigation():
            act.key("r")                                              # reject the next one
        # add a box: a, drag on the 4th photo, choose type and part, Enter
        act.key("a")
        act.drag("figure.photo:nth-of-type(4) svg.boxes", 0.2, 0.3, 0.45, 0.55)
        act.select("#add-damage", "scratch")
        act.select("#add-part", "back_bumper")
        assert page.locator("#add-submit").is_enabled()              # the drawn box filled the form
        with page.expect_navigation():
            act.key("Enter")                                          # focus is in the add form: submits it
        assert page.locator("ul.added li").count() == 1
        # the rest with one key each: after each decision the page selects the next undecided finding
        seen = {confirmed, rejected}
        for _ in range(len(findings) - 2):
            nxt = selected()
            assert nxt not in seen
            seen.add(nxt)
            with page.expect_navigation():
                act.key("c")
        assert seen == {f["id"] for f in findings}
        act.click("#complete")                                        # case reviewed
        page.wait_for_url(f"{base}/review")
        assert act.n <= 25, act.log
        assert page.locator(f"tr[data-case='{case_id}']").count() == 0
        page.goto(f"{base}/review?status=reviewed")
        assert page.locator(f"tr[data-case='{case_id}']").count() == 1
        assert dialogs == []
    print(f"actions to clear the 10-finding case: {act.n}")

    # the database
    from carcheck.serve.db.models import Finding
    from carcheck.serve.review.models import AddedDamage, CaseReview, ReviewDecision

    with app.state.sessions() as s:
        assert s.query(CaseReview).one().state == "reviewed"
        assert s.get(Finding, confirmed).review_state == "confirmed"
        assert s.get(Finding, rejected).review_state == "rejected"
        d = s.query(AddedDamage).one()
        assert (d.damage, d.part) == ("scratch", "back_bumper") and d.actor.startswith("user:")
        w, h_ = d.bbox_xywh[2], d.bbox_xywh[3]
        assert w > 50 and h_ > 50  # a quarter of the photo's width, drawn in original-photo pixels
        assert s.query(ReviewDecision).filter(ReviewDecision.action == "confirm").count() == 9
    # the audit log
    audit = client.get(f"/v1/cases/{case_id}/audit", headers=h).json()
    acts = [e["action"] for e in audit if e["action"].startswith("review.")]
    assert acts[:3] == ["review.confirm", "review.reject", "review.add_damage"] and acts[-1] == "review.case_reviewed"
    rej = next(e for e in audit if e["action"] == "review.reject")
    assert rej["detail"]["before"]["state"] == "pending" and rej["detail"]["after"]["state"] == "rejected"
    assert all(e["actor"].startswith("user:") for e in audit if e["action"].startswith("review."))
    # the export
    from carcheck.serve.review.export import export_coco

    with app.state.sessions() as s:
        summary = export_coco(s, app.state.store, tmp_path / "export")
    data = json.loads((tmp_path / "export" / "annotations.json").read_text())
    assert summary["cases"] == 1
    assert any(a.get("review_state") == "added" for a in data["annotations"])
    assert any(n["finding"] == rejected for n in data["negatives"])
    assert not any(a.get("finding") == rejected for a in data["annotations"])
    assert any(a.get("finding") == confirmed for a in data["annotations"])


def test_hostile_name_and_note_run_no_script(tmp_path, browser):
    app, settings = make_app(tmp_path)
    from fastapi.testclient import TestClient

    client = TestClient(app)
    key = api_key(app, "tenant-a")
    hostile = "<img src=x onerror=alert('name')>.png"
    case_id = assessed_case(client, key, n_findings=3, names={"167111-04.png": hostile})
    reviewer(app, "tenant-a", "rev@example.org")
    note = "<script>alert('note')</script>"
    dialogs = []
    with LiveServer(app) as base:
        page = browser.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _login(page, base, "rev@example.org")
        page.goto(f"{base}/review/cases/{case_id}")
        page.fill("li.finding.selected .e-note", note)
        with page.expect_navigation():
            page.press("li.finding.selected .e-note", "Enter")
        page.wait_for_timeout(300)
        assert page.locator("li.finding .note").first.inner_text() == note
        assert hostile in page.locator("figcaption .fname").all_inner_texts()
        assert page.evaluate("document.querySelectorAll('figcaption img, .note script').length") == 0
    assert dialogs == []
