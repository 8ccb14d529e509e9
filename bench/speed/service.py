"""Service benchmark (issue 17): a real ``carcheck serve`` on loopback, this machine.

1. Load: 50 concurrent clients each create a case, upload 3 real photos (one request each;
   copies of ../shared/data/car_damage/coco_car_damage_lplenka/val downscaled to --side px) and
   poll the case every 2 s until it is assessed. Reported: requests/s, latency percentiles of
   the non-assessment requests (everything but POST .../assessments) while the workers are busy,
   5xx count, lost cases (no final status), cases without a report.
2. kill -9 survival: 6 more cases are queued, a worker is killed with -9 mid-job, then the server
   is killed with -9 mid-job and restarted; counted from the database: cases completed exactly once
   (one done job, one job.completed audit event), jobs that were killed and finished after a re-claim.

The server runs 2 workers of 1 thread each (the machine's 2 cores; --workers/--threads to change),
the rate limit raised so 50 clients on one key are not throttled. Run:

    python bench/speed/service.py [--database-url postgresql+psycopg://...]

(about 2 minutes; writes bench/results/service.json; the data dir goes to runs/service/, which git ignores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared _common module
from _common import DATA, RESULTS, ROOT, stopwatch, write_results  # noqa: E402,F401

REPO = ROOT
sys.path.insert(0, str(ROOT / "tests"))  # tests/support/harness.py: the real server process
VAL = DATA / "car_damage" / "coco_car_damage_lplenka" / "val"


def fault_run(root: Path, database_url: str | None, photos: list[Path], workers: int, threads: int,
              n_cases: int = 6) -> dict:
    """kill -9 a worker and then the server mid-job, restart; count from the database."""
    import httpx
    from sqlalchemy import func, select

    from carcheck.serve.db.models import AuditEvent, Case, Job
    from carcheck.serve.db.session import make_engine, session_factory, sqlite_url
    from support.harness import ServerProcess, create_key_cli

    data = root / "fault-data"
    key = create_key_cli(data, "fault", database_url)
    S = session_factory(make_engine(database_url or sqlite_url(data)))
    args = ["--threads-per-worker", str(threads), "--lease-seconds", "5"]

    def running(exclude=()):
        for _ in range(1200):
            with S() as s:
                row = s.execute(select(Job.id, Job.lease_owner).where(Job.status == "running", Job.id.not_in(exclude))
                                .order_by(Job.id)).first()
            if row:
                return row[0], int(row[1].rsplit(":", 1)[1])
            time.sleep(0.05)
        raise RuntimeError("no job ran")

    srv = ServerProcess(data, database_url, workers=workers, args=args, log=root / "fault-serve1.log")
    srv2 = None
    elapsed = stopwatch()
    try:
        srv.start()
        c = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        cases = []
        for i in range(n_cases):
            cid = c.post("/v1/cases", json={"external_id": f"fault-{i}"}).json()["id"]
            c.post(f"/v1/cases/{cid}/photos", files=[("files", (p.name, p.read_bytes(), "image/jpeg"))
                                                      for p in photos[:3]])
            c.post(f"/v1/cases/{cid}/assessments")
            cases.append(cid)
        j1, pid = running()
        os.kill(pid, signal.SIGKILL)
        j2, _ = running(exclude=(j1,))
        srv.kill9()
        srv2 = ServerProcess(data, database_url, workers=workers, args=args, log=root / "fault-serve2.log").start()
        c2 = httpx.Client(base_url=srv2.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        for _ in range(600):
            st = [c2.get(f"/v1/cases/{cid}").json()["status"] for cid in cases]
            if all(s in ("assessed", "failed") for s in st):
                break
            time.sleep(0.5)
    finally:
        srv.stop()
        if srv2:
            srv2.stop()
    with S() as s:
        once = 0
        for cid in cases:
            case = s.scalar(select(Case).where(Case.public_id == cid))
            jobs = list(s.scalars(select(Job).where(Job.case_id == case.id)))
            n_done = s.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.case_id == case.id,
                                                                     AuditEvent.action == "job.completed"))
            once += (case.status == "assessed" and len(jobs) == 1 and jobs[0].status == "done" and n_done == 1)
        killed = [s.get(Job, j) for j in (j1, j2)]
        return {"cases": n_cases, "completed_exactly_once": once, "lost": n_cases - once,
                "killed_jobs": 2, "killed_jobs_finished": sum(j.status == "done" for j in killed),
                "killed_job_attempts": [j.attempts for j in killed], "lease_seconds": 5,
                "wall_s": round(elapsed(), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--side", type=int, default=640, help="longest side of the photo copies, px")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "service.json")
    a = ap.parse_args()

    from carcheck.models.runtime import cpu_info
    from support.harness import ServerProcess, create_key_cli, run_load, small_photos

    if not VAL.is_dir():
        sys.exit(f"{VAL} is absent: the benchmark needs the shared photos")
    root = REPO / "runs" / "service"
    shutil.rmtree(root, ignore_errors=True)
    photos = small_photos(sorted(VAL.glob("*.jpg")), root / "photos", a.side)
    data = root / "data"
    key = create_key_cli(data, "bench", a.database_url)
    args = ["--threads-per-worker", str(a.threads), "--rate-limit", "5000", "--rate-burst", "5000"]
    with ServerProcess(data, a.database_url, workers=a.workers, args=args, log=root / "serve.log") as srv:
        load = run_load(srv.url, key, photos, clients=a.clients, photos_per_case=3, poll_seconds=2.0, timeout=600)
    fault = fault_run(root, a.database_url, photos, a.workers, a.threads)
    import torch

    torch.set_num_threads(a.threads)
    res = {
        "what": "carcheck serve on loopback: 50 concurrent clients x 3 photos, then kill -9 of a worker and the server",
        "database": "postgresql" if a.database_url else "sqlite (WAL)",
        "workers": a.workers, "threads_per_worker": a.threads, "photo_side_px": a.side,
        "photos_distinct": len(photos), "cpu": cpu_info(),
        "requests_per_s": load["requests_per_s"],
        "p95_ms_non_assessment_while_busy": load["latency_non_assessment_while_busy"]["p95_ms"],
        "http_5xx": load["http_5xx"], "lost_cases": load["cases_lost"],
        "kill9_survival": fault,
        "load": load,
        "target": "0 lost, 0 5xx, p95 of non-assessment requests <= 200 ms while workers are busy; "
                  "every job survives kill -9 of its worker",
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(a.out, res, indent=2)
    print(json.dumps({k: v for k, v in res.items() if k != "load"}, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
