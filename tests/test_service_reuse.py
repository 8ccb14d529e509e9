"""The service's reused-photo index (issue 19): every photo a worker assesses goes into the ``photo_hashes``
table of its tenant (serve/reuse_index.py, the same ReuseIndex the CLI's ``--index`` runs), and a photo
matching a photo of another case of the SAME tenant is a review reason naming that case; another tenant's
identical photo is never matched (nor its case id shown). Duplicates inside a case and EXIF rules come from
pipeline/reuse.py and stay. The store alone on SQLite and, when CARCHECK_TEST_POSTGRES_URL is set,
PostgreSQL; then a real worker (the shipped models, a few 320-px photos) through the job path."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import data_path  # noqa: E402

VAL = "car_damage/coco_car_damage_lplenka/val"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three distinct real photos, 320 px."""
    from support.harness import small_photos

    return small_photos(sorted(data_path(VAL).glob("*.jpg"))[:3], tmp_path_factory.mktemp("photos"), 320)


def _app(tmp_path, database_url):
    from carcheck.serve.app import create_app
    from carcheck.serve.auth import create_key
    from carcheck.serve.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0, rate_limit=1000,
                        rate_burst=1000, gradcam=False, threads_per_worker=2)
    app = create_app(settings)
    keys = {}
    with app.state.sessions() as s:
        for t in ("insurer-a", "insurer-b"):
            keys[t] = create_key(s, t)
        s.commit()
    return app, settings, keys


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_tenant_store_matches_within_its_tenant_only(tmp_path, database_url, photos):
    from sqlalchemy import func, select

    from carcheck.pipeline.reuse import HashEntry, SQLiteHashStore, photo_hashes
    from carcheck.serve.db.models import Case, PhotoHash, Tenant
    from carcheck.serve.reuse_index import TenantHashStore, tenant_reuse_index

    app, _, _ = _app(tmp_path, database_url)
    sessions = app.state.sessions
    with sessions() as s:
        ta, tb = (s.scalar(select(Tenant.id).where(Tenant.name == n)) for n in ("insurer-a", "insurer-b"))
        cases = {}
        for name, tenant in (("a1", ta), ("a2", ta), ("b1", tb), ("b2", tb)):
            c = Case(tenant_id=tenant, external_id=name, status="open")
            s.add(c)
            s.flush()
            cases[name] = c.public_id
        s.commit()
    h = [photo_hashes(_rgb(p)) for p in photos]
    tenant_reuse_index(sessions, ta).add_case(cases["a1"], [("p0.jpg", h[0]), ("p1.jpg", h[1])])
    tenant_reuse_index(sessions, tb).add_case(cases["b1"], [("q0.jpg", h[0])])  # b holds the same photo
    mirrored = photo_hashes(np.ascontiguousarray(_rgb(photos[0])[:, ::-1]))
    # a's new case: its mirrored copy of p0 matches a's case a1 only; b's case b1 holds p0 too and is not named
    ms = tenant_reuse_index(sessions, ta).check_case(cases["a2"], [("x.jpg", mirrored), ("y.jpg", h[2])])
    assert [(m.photo, m.case_id, m.matched_photo, m.how) for m in ms] == [
        ("x.jpg", cases["a1"], "p0.jpg", "mirrored copy")]
    ms = tenant_reuse_index(sessions, tb).check_case(cases["b2"], [("z.jpg", h[1]), ("w.jpg", h[0])])
    assert [(m.photo, m.case_id) for m in ms] == [("w.jpg", cases["b1"])]
    assert {e.case_id for e in TenantHashStore(sessions, ta).entries()} == {cases["a1"]}
    # a store never writes or deletes another tenant's rows
    with pytest.raises(ValueError, match="not cases of tenant"):
        TenantHashStore(sessions, ta).add([HashEntry(cases["b2"], "p.jpg", h[2])])
    TenantHashStore(sessions, ta).remove_case(cases["b1"])
    assert [e.case_id for e in TenantHashStore(sessions, tb).entries()] == [cases["b1"]]
    # re-indexing a case replaces its rows; the stored hashes are those the CLI's SQLite index stores
    tenant_reuse_index(sessions, ta).add_case(cases["a1"], [("p0.jpg", h[0])])
    with sessions() as s:
        assert s.scalar(select(func.count(PhotoHash.id)).where(PhotoHash.tenant_id == ta)) == 1
        row = s.scalars(select(PhotoHash).where(PhotoHash.tenant_id == ta)).one()
        assert (row.case_id, row.photo, row.hash_size) == (s.scalar(select(Case.id).where(
            Case.public_id == cases["a1"])), "p0.jpg", 16)
    cli = SQLiteHashStore(tmp_path / "index.sqlite")
    cli.add([HashEntry(cases["a1"], "p0.jpg", h[0])])
    (from_cli,), (from_db,) = cli.entries(), TenantHashStore(sessions, ta).entries()
    assert np.array_equal(from_cli.hashes.bits, from_db.hashes.bits) and from_cli.hashes.aspect == from_db.hashes.aspect


@pytest.fixture(scope="module")
def assessor():
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig

    return Assessor(AssessConfig(threads=2, gradcam=False))


def _jpeg(img: Image.Image, software: str | None = None) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if software:
        exif[305] = software
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def _assess(client, worker, key, files: list[tuple[str, bytes]]) -> tuple[str, dict, list[str]]:
    """A case with ``files``, assessed by ``worker`` through the queue: (case id, report, photo names)."""
    from carcheck.serve import jobs

    h = {"Authorization": f"Bearer {key}"}
    cid = client.post("/v1/cases", json={"external_id": "claim"}, headers=h).json()["id"]
    up = client.post(f"/v1/cases/{cid}/photos", files=[("files", (n, b, "image/jpeg")) for n, b in files], headers=h)
    assert up.status_code == 201 and all(p["status"] == "stored" for p in up.json()), up.text
    assert client.post(f"/v1/cases/{cid}/assessments", headers=h).status_code == 202
    with worker.sessions() as s:
        job, token = jobs.claim(s, worker.owner, 120)
    worker.run_job(job, token)
    case = client.get(f"/v1/cases/{cid}", headers=h).json()
    assert case["status"] == "assessed", case["job"]
    return cid, case["report"], [f"{p['id']}.jpg" for p in up.json()]


def test_worker_flags_a_photo_of_another_case_of_the_tenant(tmp_path, database_url, photos, assessor,
                                                            monkeypatch):
    from sqlalchemy import select

    from carcheck.serve.db.models import PhotoHash
    from carcheck.serve.jobs import Worker

    app, settings, keys = _app(tmp_path, database_url)
    client = TestClient(app)
    worker = Worker(settings)
    worker.assessor = assessor  # the models loaded once for the module
    a, b = keys["insurer-a"], keys["insurer-b"]
    img = Image.open(photos[0]).convert("RGB")
    original = photos[0].read_bytes()
    first, _, (p0,) = _assess(client, worker, a, [("front.jpg", original)])
    # insurer b's case with the very same file: a's case is never matched (nor named)
    other, rep_b, _ = _assess(client, worker, b, [("front.jpg", original)])
    assert rep_b["reuse"] == [] and not any("used before" in r for p in rep_b["photos"] for r in p["review_reasons"])
    # a's next claim: a mirrored copy of the first claim's photo, and a resized copy re-saved by an editor
    second, rep, (m, r) = _assess(client, worker, a, [
        ("mirrored.jpg", _jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))),
        ("resized.jpg", _jpeg(img.resize((img.width * 3 // 4, img.height * 3 // 4)), software="Adobe Photoshop 25.1"))])
    reasons = {p["path"]: p["review_reasons"] for p in rep["photos"]}
    used = [x for x in reasons[m] if "photo used before" in x]
    assert used == [f"photo used before: matches {p0} of case {first} (mirrored copy, "
                    f"hash distance {used[0].rsplit(' ', 1)[-1]}"]
    assert any(f"of case {first}" in x for x in reasons[r])
    assert any(x.startswith(f"duplicate of {m} in this case") for x in reasons[r])  # inside the case: kept
    assert any("EXIF Software tag names editing software: Adobe Photoshop" in x for x in reasons[r])
    assert sorted((x["photo"], x["case_id"], x["same_case"]) for x in rep["reuse"]) == sorted([
        (m, first, False), (r, first, False), (r, second, True)])  # each once (the second check adds none)
    assert other not in str(rep)
    with app.state.sessions() as s:
        rows = s.execute(select(PhotoHash.tenant_id, PhotoHash.photo)).all()
    assert len(rows) == 4 and len({t for t, _ in rows}) == 2
    # another worker indexes a case of a with the same photo while this case is being assessed (after the
    # pipeline's check): the worker's second check after indexing still names it
    from carcheck.pipeline.reuse import photo_hashes
    from carcheck.serve.reuse_index import tenant_reuse_index

    parallel = client.post("/v1/cases", json={"external_id": "parallel"}, headers={"Authorization": f"Bearer {a}"})
    parallel = parallel.json()["id"]
    real_assess = assessor.assess

    def assess_while_another_worker_indexes(names, case_id, **kw):
        out = real_assess(names, case_id, **kw)
        with app.state.sessions() as s:
            from carcheck.serve.db.models import Case

            tenant = s.scalar(select(Case.tenant_id).where(Case.public_id == parallel))
        tenant_reuse_index(app.state.sessions, tenant).add_case(parallel, [("same.jpg", photo_hashes(_rgb(photos[1])))])
        return out

    monkeypatch.setattr(assessor, "assess", assess_while_another_worker_indexes)
    _, rep3, (p3,) = _assess(client, worker, a, [("later.jpg", photos[1].read_bytes())])
    assert [(x["photo"], x["case_id"], x["same_case"]) for x in rep3["reuse"]] == [(p3, parallel, False)]
    reasons3 = next(p["review_reasons"] for p in rep3["photos"] if p["path"] == p3)
    assert sum(f"photo used before: matches same.jpg of case {parallel}" in x for x in reasons3) == 1


def test_late_matches_make_a_new_report_and_leave_the_built_one_unchanged(photos):
    """The worker's second check (after indexing) never edits the report the pipeline built (issue 29): a late
    match gives a new report with the match and its review reason; no match gives the same report back."""
    from test_review_support import fixture_report

    from carcheck.pipeline.reuse import HashEntry, MemoryHashStore, ReuseIndex, photo_hashes
    from carcheck.pipeline.review import reused_photo_reason
    from carcheck.schema import CaseReport
    from carcheck.serve.reuse_index import with_late_matches

    report = CaseReport.model_validate({**fixture_report(), "case_id": "case-b", "reuse": []})
    path = report.photos[0].path
    before = report.model_dump(mode="json")
    h = photo_hashes(_rgb(photos[0]))
    store = MemoryHashStore()
    store.add([HashEntry("case-b", path, h)])
    assert with_late_matches(ReuseIndex(store), report) is report  # nothing late: the same report
    store.add([HashEntry("case-a", "earlier.jpg", h)])  # indexed by another worker meanwhile
    late = with_late_matches(ReuseIndex(store), report)
    assert report.model_dump(mode="json") == before  # the built report is not edited
    assert [(m.photo, m.case_id) for m in late.reuse] == [(path, "case-a")]
    assert late.photos[0].review_reasons == [*report.photos[0].review_reasons, reused_photo_reason(late.reuse[0])]
    assert late.photos[1:] == report.photos[1:] and late.findings == report.findings
