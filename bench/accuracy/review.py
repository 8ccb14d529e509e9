"""Review UI benchmark (issue 18): server time of a case page with 12 photos (target <= 300 ms on
this machine), on a case the service really assessed, and the docs' screenshots of the queue and of
that case page (Playwright driving Debian's chromium).

The case: the 12 photos of ../shared/data/cases/salvage_panamera_167111 uploaded through the API and
assessed by the service's own worker class in this process (models loaded once, as a worker does).
The page is then requested in-process (ASGI, no network): that is the server's time to answer,
measured over --runs requests after a warm-up, with the image requests (blurred derivatives,
overlays, crops: separate requests the browser makes) timed apart.

    /work/cpujob python bench/accuracy/review.py [--runs 50] [--no-screenshots] [--report ASSESS_OUT]
(--report: record the report.json/report.html of an earlier `carcheck assess` of the 12 photos instead
of running the worker; the committed result was made so, see its "assessment" field.)
Writes bench/results/review.json (with carcheck.models.runtime.cpu_info) and docs/review_queue.png,
docs/review_case.png.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, clock, stopwatch, timed, timed_each, write_results  # noqa: E402,F401

REPO = ROOT
CASE = DATA / "cases" / "salvage_panamera_167111"
PASSWORD = "correct horse battery"


def _stored_case(app, client, key: str, report_dir: Path) -> str:
    """The case recorded from an earlier ``carcheck assess CASE --out report_dir`` of the same 12 photos
    (its report.json and report.html, photo paths renamed as the worker names them), through the
    service's enqueue/claim/complete: the same rows a worker writes, without the minutes of inference."""
    from carcheck.serve import jobs
    from carcheck.serve.db.models import Case

    h = {"Authorization": f"Bearer {key}"}
    case_id = client.post("/v1/cases", json={"external_id": "salvage-167111"}, headers=h).json()["id"]
    paths = sorted(CASE.glob("*.png"))
    r = client.post(f"/v1/cases/{case_id}/photos", files=[("files", (p.name, p.read_bytes(), "image/png"))
                                                          for p in paths], headers=h)
    assert r.status_code == 201 and sum(p["status"] == "stored" for p in r.json()) == 12, r.text
    text = (report_dir / "report.json").read_text()
    for p, up in zip(paths, r.json()):
        text = text.replace(f'"{p}"', f'"{up["id"]}.png"').replace(f'"{p.name}"', f'"{up["id"]}.png"')
    report = json.loads(text)
    with app.state.sessions() as s:
        jobs.enqueue(s, s.query(Case).filter_by(public_id=case_id).one(), "bench")
        s.commit()
        job, token = jobs.claim(s, "bench:1", 60)
        dest = app.state.store.report_dir(case_id, job.public_id) / "report.html"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((report_dir / "report.html").read_bytes())
        assert jobs.complete(s, job.id, token, "bench:1", report, str(dest.relative_to(app.state.store.root)))
    return case_id


def _assessed_case(app, client, key: str, settings) -> str:
    from carcheck.serve import jobs
    from carcheck.serve.db.models import Case

    h = {"Authorization": f"Bearer {key}"}
    case_id = client.post("/v1/cases", json={"external_id": "salvage-167111"}, headers=h).json()["id"]
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted(CASE.glob("*.png"))]
    r = client.post(f"/v1/cases/{case_id}/photos", files=files, headers=h)
    assert r.status_code == 201 and sum(p["status"] == "stored" for p in r.json()) == 12, r.text
    with app.state.sessions() as s:
        jobs.enqueue(s, s.query(Case).filter_by(public_id=case_id).one(), "bench")
        s.commit()
    worker = jobs.Worker(settings)
    worker.load()
    elapsed = stopwatch()
    with worker.sessions() as s:
        job, token = jobs.claim(s, worker.owner, settings.lease_seconds)
    worker.run_job(job, token)
    print(f"assessed {case_id} in {elapsed():.1f} s", file=sys.stderr)
    assert client.get(f"/v1/cases/{case_id}", headers=h).json()["status"] == "assessed"
    return case_id


def _screenshots(app, case_id: str) -> list[str]:
    import shutil

    import uvicorn
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    out = []
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"])
            page = b.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{base}/login")
            page.fill("#email", "bench@example.org")
            page.fill("#password", PASSWORD)
            page.click("#login")
            page.wait_for_url(f"{base}/review")
            (REPO / "docs").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "docs" / "review_queue.png"))
            out.append("docs/review_queue.png")
            page.goto(f"{base}/review/cases/{case_id}")
            page.keyboard.press("d")  # the damage overlay on
            page.keyboard.press("j")
            page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
            page.wait_for_load_state("networkidle")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(REPO / "docs" / "review_case.png"), full_page=False)
            out.append("docs/review_case.png")
            b.close()
    finally:
        server.should_exit = True
        th.join(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--no-screenshots", action="store_true")
    ap.add_argument("--report", type=Path, help="Folder of an earlier `carcheck assess` of the case (report.json, "
                    "report.html): recorded as the assessment instead of running the worker.")
    args = ap.parse_args()
    if not CASE.is_dir():
        sys.exit(f"{CASE} is absent: the bench needs the shared demo case")
    from fastapi.testclient import TestClient

    from carcheck.models.runtime import cpu_info
    from carcheck.serve.app import create_app
    from carcheck.serve.auth import create_key
    from carcheck.serve.review.accounts import create_user
    from carcheck.serve.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="carcheck-review-bench-"))
    settings = Settings(data_dir=tmp / "data", workers=0, threads_per_worker=2, gradcam=False)
    app = create_app(settings)
    client = TestClient(app)
    with app.state.sessions() as s:
        key = create_key(s, "bench")
        create_user(s, "bench", "bench@example.org", "reviewer", PASSWORD)
        s.commit()
    case_id = (_stored_case(app, client, key, args.report) if args.report
               else _assessed_case(app, client, key, settings))
    tok = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"email": "bench@example.org", "password": PASSWORD, "csrf_token": tok},
                    follow_redirects=False)
    assert r.status_code == 303
    url = f"/review/cases/{case_id}"
    first, first_s = clock(client.get, url)
    first_ms = 1000 * first_s
    assert first.status_code == 200
    n_photos = first.text.count('<figure class="photo"')
    n_findings = first.text.count('<li class="finding')
    images = re.findall(r'src="(/review/cases/[^"]+\.jpg)"', first.text)
    # the browser's image requests, first time (derivative blur, overlay extraction, crops)
    got, img_s = timed_each(client.get, images)
    assert all(g.status_code == 200 for g in got), [src for src, g in zip(images, got) if g.status_code != 200]
    img_cold = [1000 * s for s in img_s]

    def case_page():
        assert client.get(url).status_code == 200

    page = timed(case_page, runs=args.runs, warmup=5)
    q = client.get("/review")
    queue = timed(lambda: client.get("/review"), runs=args.runs, warmup=0)  # after the one above
    shots = [] if args.no_screenshots else _screenshots(app, case_id)
    res = {
        "what": "server time of GET /review/cases/{id} (in-process ASGI, logged-in reviewer) for a case the service "
                "assessed: 12 photos of ../shared/data/cases/salvage_panamera_167111",
        "photos_on_page": n_photos, "findings_on_page": n_findings, "runs": args.runs,
        "case_page_ms": {"median": round(1000 * page["median_s"], 1), "p95": round(1000 * page["p95_s"], 1),
                         "max": round(1000 * page["max_s"], 1), "first_request": round(first_ms, 1), "warmup": 5},
        "queue_page_ms_median": round(1000 * queue["median_s"], 1),
        "target_ms": 300, "meets_target": 1000 * page["p95_s"] <= 300,
        "image_requests": {"count": len(images), "cold_ms_median": round(statistics.median(img_cold), 1),
                           "cold_ms_max": round(max(img_cold), 1)},
        "page_bytes": len(first.content), "queue_status": q.status_code,
        "assessment": f"recorded from {args.report} (carcheck assess of the same photos)" if args.report
                      else "run by the service's worker in this process",
        "load_average_1min": round(__import__("os").getloadavg()[0], 2),
        "screenshots": shots, "machine": cpu_info(),
    }
    out = REPO / "bench" / "results" / "review.json"
    write_results(out, res, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
