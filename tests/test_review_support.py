"""Shared set-up of the review tests (issue 18): a service app with an assessed case whose report is
the stored report of a real ``carcheck assess`` run (tests/fixtures/review_report_panamera.json: the
12-photo salvage case of ../shared/data/cases, paths made relative), recorded through the service's
own job path (enqueue -> claim -> complete). The photos uploaded are that case's photos when the
shared data is there, else plain noise images of the same sizes (the review logic reads the report,
not the pixels). Also the migration round trip (a test of its own, below).

``INSTANCES_FIXTURE`` (tests/fixtures/review_report_panamera_instances.json) is a report of schema 1.14,
with damage instances: ``carcheck assess`` of the same case at f9867ad, trimmed to photos 04-06 (their
findings and per-part findings, paths made relative, no estimate, no Grad-CAM images)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import DATA

FIXTURE = Path(__file__).with_name("fixtures") / "review_report_panamera.json"
INSTANCES_FIXTURE = FIXTURE.with_name("review_report_panamera_instances.json")
CASE_DIR = DATA / "cases" / "salvage_panamera_167111"


def fixture_report(n_findings: int | None = None, fixture: Path = FIXTURE) -> dict:
    """The stored report (a real assessment), optionally cut to its first ``n_findings`` findings."""
    report = json.loads(fixture.read_text())
    if n_findings is not None:
        report["findings"] = report["findings"][:n_findings]
    return report


def photo_bytes(name: str, width: int, height: int, seed: int) -> bytes:
    """The case's photo ``name`` if the shared data is there, else a noise PNG of that size."""
    p = CASE_DIR / name
    if p.is_file():
        return p.read_bytes()
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_app(tmp_path: Path, database_url: str | None = None):
    """(app, settings) of a fresh service data dir (no workers); ``database_url``: None (SQLite in the data
    dir) or the ``database_url`` fixture's PostgreSQL."""
    from carcheck.serve.app import create_app
    from carcheck.serve.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", workers=0, rate_limit=1000, rate_burst=1000,
                        database_url=database_url)
    return create_app(settings), settings


def api_key(app, tenant: str) -> str:
    from carcheck.serve.auth import create_key

    with app.state.sessions() as s:
        key = create_key(s, tenant)
        s.commit()
    return key


def reviewer(app, tenant: str, email: str, password: str = "correct horse battery", role: str = "reviewer"):
    from carcheck.serve.review.accounts import create_user

    with app.state.sessions() as s:
        u = create_user(s, tenant, email, role, password)
        s.commit()
        return u.id


def assessed_case(client, key: str, n_findings: int | None = None, external_id: str = "claim-1",
                  names: dict[str, str] | None = None, html: Path | None = None, fixture: Path = FIXTURE) -> str:
    """Create a case through the API, upload the report's photos, and record the fixture report as
    its assessment (the service's enqueue/claim/complete). ``names`` renames uploads (file name as the
    client sends it); ``html`` is stored as the report's HTML; ``fixture``: the report file. Returns the case id."""
    from carcheck.serve import jobs
    from carcheck.serve.db.models import Case

    h = {"Authorization": f"Bearer {key}"}
    r = client.post("/v1/cases", json={"external_id": external_id}, headers=h)
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    report = fixture_report(n_findings, fixture)
    files = []
    entries = [e for e in report["photos"] if e.get("width")]
    for i, e in enumerate(entries):
        sent = (names or {}).get(e["path"], e["path"])
        files.append(("files", (sent, photo_bytes(e["path"], e["width"], e["height"], i), "image/png")))
    r = client.post(f"/v1/cases/{case_id}/photos", files=files, headers=h)
    assert r.status_code == 201 and all(p["status"] == "stored" for p in r.json()), r.text
    text = json.dumps(report)
    for e, up in zip(entries, r.json()):  # the worker names each photo <photo id><suffix> in the report
        text = re.sub(rf'"{re.escape(e["path"])}"', f'"{up["id"]}.png"', text)
    report = json.loads(text)
    report["case_id"] = case_id
    app = client.app
    with app.state.sessions() as s:
        case = s.query(Case).filter_by(public_id=case_id).one()
        jobs.enqueue(s, case, "test")
        s.commit()
        job, token = jobs.claim(s, "test:1", 60)
        html_rel = None
        if html is not None:
            dest = app.state.store.report_dir(case_id, job.public_id) / "report.html"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(html.read_bytes())
            html_rel = str(dest.relative_to(app.state.store.root))
        assert jobs.complete(s, job.id, token, "test:1", report, html_rel)
    return case_id


def test_review_migration_upgrades_and_downgrades(tmp_path):
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from carcheck.serve.db.session import MIGRATIONS, make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"reviewers", "web_sessions", "finding_reviews", "added_damages", "case_reviews",
            "review_decisions"} <= tables
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert "reviewers" not in set(sa.inspect(engine).get_table_names())
    upgrade(engine)
    assert "review_decisions" in set(sa.inspect(engine).get_table_names())


def test_migrations_match_every_table_the_models_declare(tmp_path, database_url):
    """``alembic check`` through the migrations' env.py on a database migrated to head: autogenerate
    finds nothing to add or drop (env.py knows every declarative module: jobs, review, photo hashes).
    In a fresh interpreter: other tests' imports would otherwise register the tables env.py forgets."""
    import subprocess
    import sys

    url = database_url or f"sqlite:///{tmp_path / 'm.db'}"
    script = (
        "import sys\n"
        "from alembic import command\n"
        "from alembic.config import Config\n"
        "from carcheck.serve.db.session import MIGRATIONS, make_engine, upgrade\n"
        "engine = make_engine(sys.argv[1])\n"
        "upgrade(engine)\n"
        "cfg = Config()\n"
        "cfg.set_main_option('script_location', str(MIGRATIONS))\n"
        "with engine.begin() as conn:\n"
        "    cfg.attributes['connection'] = conn\n"
        "    command.check(cfg)\n"  # raises AutogenerateDiffsDetected naming the differences
    )
    r = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
