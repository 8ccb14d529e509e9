"""carcheck batch: one report per case folder, a summary that survives a kill, resumable re-runs, Ray mode."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carcheck.batch import run as batch_run
from carcheck.batch.run import SUMMARY_FIELDS, run_batch
from carcheck.cli import app
from carcheck.models.inference import DEFAULT_SEGMENTERS

from conftest import data_path

runner = CliRunner()
pytestmark = pytest.mark.skipif(not all(p.exists() for p in DEFAULT_SEGMENTERS), reason="shipped segmenter weights missing")

CASES = ("a", "b", "c")


def read_summary(out: Path) -> tuple[list[str], list[dict]]:
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def numbers(rows) -> dict:
    """case -> (photos, findings, for_review, status) from summary rows or CaseResults, as strings."""
    get = (lambda r, k: r[k]) if rows and isinstance(rows[0], dict) else (lambda r, k: getattr(r, k))
    return {get(r, "case"): tuple(str(get(r, k)) for k in ("photos", "findings", "for_review", "status")) for r in rows}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Three case folders of 2 real photos each."""
    photos = sorted(data_path("car_parts").joinpath("testset", "JPEGImages").glob("*.jpg"))[:6]
    assert len(photos) == 6
    r = tmp_path_factory.mktemp("fleet")
    for i, case in enumerate(CASES):
        (r / case).mkdir()
        for p in photos[2 * i: 2 * i + 2]:
            shutil.copy(p, r / case / p.name)
    return r


@pytest.fixture(scope="module")
def assessor():
    """One assessor for the loop-mode tests: 1 torch thread (on a shared 2-core machine a 2-thread
    OpenMP team stalls), no Grad-CAM (it changes no number in the summary)."""
    import torch

    from carcheck.models.runtime import set_threads
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig

    before = torch.get_num_threads()
    set_threads(1)
    yield Assessor(AssessConfig(gradcam=False))
    set_threads(before)


@pytest.fixture(scope="module")
def reuse_assessor(assessor):
    """Loop mode with the module's assessor (models loaded once for the whole file)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_run, "_make_assessor", lambda precision, threads: assessor)
        yield


@pytest.fixture(scope="module")
def first_run(root, reuse_assessor, tmp_path_factory):
    """A loop-mode run of the 3 cases; what summary.csv held each time a case finished."""
    out = tmp_path_factory.mktemp("first") / "out"
    seen = []
    results = run_batch(root, out, mode="loop", on_result=lambda r: seen.append((r.case, (out / "summary.csv").read_text())))
    return out, results, seen


def test_loop_mode_writes_every_report_and_a_correct_summary(first_run):
    out, results, seen = first_run
    header, rows = read_summary(out)
    assert header == list(SUMMARY_FIELDS) == "case,photos,findings,for_review,seconds,status,error".split(",")
    assert [r["case"] for r in rows] == list(CASES)
    for row in rows:
        rep = json.loads((out / row["case"] / "report.json").read_text())
        assert (out / row["case"] / "report.html").stat().st_size > 1000
        assert rep["case_id"] == row["case"]
        assert row["status"] == "ok" and row["error"] == ""
        assert (row["photos"], row["findings"], row["for_review"]) == (
            "2", str(rep["summary"]["findings"]), str(rep["summary"]["findings_for_review"]))
        assert float(row["seconds"]) > 0
    assert numbers(rows) == numbers(results)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left
    # the summary grows as cases finish (a killed run keeps what it did)
    assert [c for c, _ in seen] == list(CASES)
    for i, (case, text) in enumerate(seen):
        cases_in_file = [r[0] for r in csv.reader(text.splitlines())][1:]
        assert cases_in_file == list(CASES[: i + 1])


def test_a_failing_case_is_listed_with_its_error_and_the_others_go_on(root, reuse_assessor, tmp_path, monkeypatch):
    r = tmp_path / "root"
    for case in CASES[:2]:
        shutil.copytree(root / case, r / case)
    (r / "blocked").mkdir()
    shutil.copy(next((r / "a").iterdir()), r / "blocked")
    out = tmp_path / "out"
    out.mkdir()
    (out / "blocked").write_text("a file where the case's report folder should go")
    real = batch_run.find_cases
    monkeypatch.setattr(batch_run, "find_cases", lambda *a, **k: real(*a, **k) + [r / "vanished"])
    results = {x.case: x for x in run_batch(r, out, mode="loop")}
    _, rows = read_summary(out)
    rows = {x["case"]: x for x in rows}
    assert set(rows) == {*CASES[:2], "blocked", "vanished"}
    for case in CASES[:2]:
        assert rows[case]["status"] == results[case].status == "ok"
        assert (out / case / "report.html").exists()
    assert rows["blocked"]["status"] == "failed" and "FileExistsError" in rows["blocked"]["error"], rows["blocked"]
    assert rows["vanished"]["status"] == "failed" and "FileNotFoundError" in rows["vanished"]["error"]
    assert (out / "blocked").read_text().startswith("a file")  # left alone
    assert results["blocked"].error == rows["blocked"]["error"]


def test_a_case_killed_while_writing_leaves_no_report_folder(root, reuse_assessor, tmp_path, monkeypatch):
    import carcheck.report.html

    def dies_after_json(report, visuals, out_dir, *a):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "report.json").write_text(report.model_dump_json())
        (Path(out_dir) / "report.html").write_text("<html>half")
        raise OSError("disk full")

    monkeypatch.setattr(carcheck.report.html, "write_report", dies_after_json)
    r = tmp_path / "root"
    shutil.copytree(root / "a", r / "a")
    out = tmp_path / "out"
    [res] = run_batch(r, out, mode="loop")
    assert res.status == "failed" and "disk full" in res.error
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]  # no out/a, no temporary folder


def test_a_rerun_skips_complete_cases_and_reads_their_numbers_back(first_run, root, reuse_assessor, tmp_path,
                                                                   monkeypatch):
    src, results, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    mtimes = {c: (out / c / "report.json").stat().st_mtime_ns for c in CASES}
    monkeypatch.setattr(batch_run, "assess_case", lambda *a: pytest.fail("a complete case was assessed again"))
    again = run_batch(root, out, mode="loop")
    assert [r.status for r in again] == ["skipped"] * 3
    assert {c: (out / c / "report.json").stat().st_mtime_ns for c in CASES} == mtimes
    _, rows = read_summary(out)
    first = {k: v[:3] for k, v in numbers(results).items()}
    assert {k: v[:3] for k, v in numbers(rows).items()} == first
    assert {r["status"] for r in rows} == {"skipped"}


def test_a_half_written_case_is_redone(first_run, root, reuse_assessor, tmp_path):
    src, results, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    (out / "b" / "report.html").unlink()  # killed between the two files (an older writer)
    (out / "c" / "report.json").write_text('{"summary": {"photos"')  # killed mid-file
    again = {r.case: r for r in run_batch(root, out, mode="loop")}
    assert (again["a"].status, again["b"].status, again["c"].status) == ("skipped", "ok", "ok")
    assert (out / "b" / "report.html").exists()
    assert json.loads((out / "c" / "report.json").read_text())["case_id"] == "c"
    assert numbers(list(again.values())) == {**numbers(results), "a": numbers(results)["a"][:3] + ("skipped",)}


def test_ray_mode_gives_the_same_summary(first_run, root, tmp_path):
    ray = pytest.importorskip("ray")
    _, loop_results, _ = first_run
    out = tmp_path / "out"
    plan: dict = {}
    try:
        results = run_batch(root, out, mode="ray", plan=plan)  # local Ray, default workers
    finally:
        ray.shutdown()
    _, rows = read_summary(out)
    assert numbers(rows) == numbers(results) == numbers(loop_results)
    cores = batch_run._cores()
    assert plan == {"workers": batch_run.default_local_workers(), "threads": max(1, cores // plan["workers"])}
    for case in CASES:  # each actor set its threads before building its assessor
        rep = json.loads((out / case / "report.json").read_text())
        assert rep["config"]["threads"] == plan["threads"]  # every report states the threads it ran with


def test_exit_codes(first_run, root, reuse_assessor, tmp_path):
    src, _, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    r = runner.invoke(app, ["batch", str(root), "--out", str(out), "--mode", "loop"])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output
    r2 = tmp_path / "root"
    shutil.copytree(root, r2)
    (r2 / "d").mkdir()
    shutil.copy(next((r2 / "a").iterdir()), r2 / "d")
    (out / "d").write_text("blocks the case's report folder")
    r = runner.invoke(app, ["batch", str(r2), "--out", str(out), "--mode", "loop"])
    assert r.exit_code == 1, r.output
    assert "failed" in r.output
    for args in (["batch", str(tmp_path / "missing"), "--out", str(out)],  # ROOT missing
                 ["batch", str(out / "d"), "--out", str(tmp_path / "o2")],  # ROOT a file
                 ["batch", str(root), "--out", str(out / "summary.csv")],  # OUT an existing file
                 ["batch", str(root), "--out", str(out), "--mode", "threads"],
                 ["batch", str(root), "--out", str(out), "--precision", "fp16"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)


def test_a_case_without_one_readable_photo_is_failed_and_redone(tmp_path, reuse_assessor):
    """A case whose every file fails (or an empty case folder) writes its report but is not 'ok', and
    a re-run tries it again instead of skipping it for good."""
    root, out = tmp_path / "root", tmp_path / "out"
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "a.jpg").write_bytes(b"not a photo")
    (root / "empty").mkdir()
    first = {r.case: r for r in batch_run.run_batch(root, out, mode="loop")}
    assert first["bad"].status == "failed" and "could be read" in first["bad"].error
    assert first["empty"].status == "failed" and "no photos" in first["empty"].error
    assert (out / "bad" / "report.json").is_file()  # the reasons are there for a person
    again = {r.case: r for r in batch_run.run_batch(root, out, mode="loop")}
    assert again["bad"].status == "failed" and again["empty"].status == "failed"  # not "skipped"
