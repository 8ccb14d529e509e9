"""Claims features (issue 19): repair estimate rules and table validation, before/after comparison categories,
reused-photo matching on edited copies of a real photo, EXIF rules, the compare command on two reports."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
import numpy as np
import pytest
import yaml
from PIL import Image

from carcheck.pipeline.compare import compare_cases, same_vehicle_check
from carcheck.pipeline.estimate import (DEFAULT_COST_TABLE, KNOWN_DAMAGE, KNOWN_PARTS, SIZES, CostTableError,
                                        estimate_case, load_cost_table, price_finding)
from carcheck.pipeline.exif import PhotoMeta, exif_reasons, read_photo_meta
from carcheck.pipeline.reuse import ReuseIndex, SQLiteHashStore, photo_hashes, reuse_check
from carcheck.schema import AssessConfig, CaseReport, CaseSummary, ClassScore, Finding, PhotoReport, VehicleIdentity

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = sorted((DATA / "car_parts" / "testset" / "JPEGImages").glob("*.jpg"))
needs_real = pytest.mark.skipif(len(REAL) < 12, reason=f"shared photos absent ({DATA / 'car_parts' / 'testset'})")


def finding(part, damage, size, review=False, photos=("a.jpg",)):
    return Finding(part=part, damage=damage, size_class=size, area_fraction_of_part=0.1, c_base=0.9, k_agree=1.0,
                   c_refined=0.9, needs_review=review, photos=list(photos))


# ------------------------------------------------------------------------------------------- estimate
def test_estimate_rules_on_hand_made_findings():
    table, _ = load_cost_table()
    small_dent = price_finding(table, "front_left_door", "dent", "small", "standard")
    assert (small_dent.operation, small_dent.rule) == ("paintless dent repair", "panel-dent-small-pdr")
    assert small_dent.parts == (0.0, 0.0) and small_dent.paint == (0.0, 0.0)
    # 1.0-2.5 h x 60-110 per hour
    assert small_dent.total == (60.0, 275.0)
    big = price_finding(table, "front_bumper", "dent", "large", "standard")
    assert big.operation == "replace" and big.parts == (250.0, 650.0)
    assert big.total == (1.5 * 60 + 150 + 250, 3.0 * 110 + 300 + 650)
    assert price_finding(table, "front_glass", "glass_shatter", "small", "standard").operation == "replace"
    assert price_finding(table, "wheel", "tire_flat", "medium", "standard").rule == "tyre-replace"
    assert price_finding(table, "unassigned", "lamp_broken", "small", "standard").rule == "lamp-unassigned"
    assert price_finding(table, "hood", "scratch", "medium", "standard").operation == "paint"
    # premium parts cost 1.7x
    prem = price_finding(table, "front_bumper", "dent", "large", "premium")
    assert prem.parts == (round(250 * 1.7, 2), round(650 * 1.7, 2))


def test_estimate_covers_current_and_cardd_damage_types():
    assert {"dent", "scratch", "broken", "crack", "glass_shatter", "lamp_broken", "tire_flat"} <= set(KNOWN_DAMAGE)
    table, _ = load_cost_table()
    for part in KNOWN_PARTS:
        for damage in KNOWN_DAMAGE:
            for size in SIZES:
                line = price_finding(table, part, damage, size, "standard")
                assert 0 < line.total[0] <= line.total[1], (part, damage, size)


def test_estimate_case_total_inclusion_class_and_statement():
    findings = [finding("front_bumper", "dent", "large", photos=("p1.jpg",)),
                finding("front_bumper", "scratch", "small", review=True), finding("hood", "dent", "small")]
    e = estimate_case(findings)
    assert e.currency == "EUR" and e.vehicle_class == "standard" and "no make/model" in e.vehicle_class_source
    assert [ln.rule for ln in e.lines] == ["bumper-dent-large-replace", "panel-scratch-small", "panel-dent-small-pdr"]
    # the scratch is on the replaced bumper: included, adds nothing
    assert e.lines[1].included_in == "bumper-dent-large-replace" and e.lines[1].total == (0.0, 0.0)
    assert e.total == (e.lines[0].total[0] + e.lines[2].total[0], e.lines[0].total[1] + e.lines[2].total[1])
    assert e.midpoint == round(sum(e.total) / 2, 2) and e.lines_for_review == 1 and e.lines[0].photos == ["p1.jpg"]
    assert "estimate" in e.statement.lower()
    bmw = VehicleIdentity(make_model_top3=[ClassScore(label="BMW_X5_SUV_2007", probability=0.8)],
                          make_top3=[ClassScore(label="BMW", probability=0.9)], in_scope=True, known_models=32)
    e2 = estimate_case(findings, bmw)
    assert e2.vehicle_class == "premium" and e2.total[1] > e.total[1]
    out = bmw.model_copy(update={"in_scope": False})
    assert estimate_case(findings, out).vehicle_class == "standard"
    assert estimate_case(findings, vehicle_class="economy").vehicle_class == "economy"
    assert estimate_case([]).total == (0.0, 0.0)


def _table_dict():
    return yaml.safe_load(DEFAULT_COST_TABLE.read_text(encoding="utf-8"))


def _write(tmp_path, d, name="t.yaml"):
    f = tmp_path / name
    f.write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
    return f


def test_custom_cost_table_replaces_the_default(tmp_path):
    d = _table_dict()
    d.update(currency="CHF", name="swiss", labour_rate=[100, 100])
    d["scale"]["paintless dent repair"] = 2.0
    table, label = load_cost_table(_write(tmp_path, d))
    assert label.endswith("t.yaml v1")
    e = estimate_case([finding("front_left_door", "dent", "small")], table=table, table_label=label)
    assert e.currency == "CHF" and e.total == (200.0, 500.0) and e.cost_table == label


@pytest.mark.parametrize("edit, field, words", [
    (lambda d: d.update(labour_rate=[90, 50]), "labour_rate", "low 90.0 > high 50.0"),
    (lambda d: d.update(default_class="luxury"), "(top level)", "default_class 'luxury'"),
    (lambda d: d["rules"][0].update(damage=["rust"]), "rules", "unknown damage type 'rust'"),
    (lambda d: d["rules"][3].update(operation="weld"), "rules.3.operation", "Input should be"),
    (lambda d: d["rules"][0].update(size=["huge"]), "rules.0", "size 'huge'"),
    (lambda d: d.update(rules=[r for r in d["rules"] if r["parts"] != "*"]), "rules", "match no rule"),
    (lambda d: d["makes"].update(Lada="budget"), "makes.Lada", "class 'budget'"),
    (lambda d: d["scale"].pop("paint"), "scale", "no factor for 'paint'"),
    (lambda d: d.update(colour="red"), "colour", "Extra inputs"),
])
def test_cost_table_validation_names_file_and_field(tmp_path, edit, field, words):
    d = _table_dict()
    edit(d)
    f = _write(tmp_path, d)
    with pytest.raises(CostTableError) as e:
        load_cost_table(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: ") and field in msg and words in msg, msg


def test_cost_table_unreadable_and_bad_yaml(tmp_path):
    with pytest.raises(CostTableError, match="missing.yaml: cannot be read"):
        load_cost_table(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed", encoding="utf-8")
    with pytest.raises(CostTableError, match="bad.yaml: not valid YAML"):
        load_cost_table(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(CostTableError, match="list.yaml: a cost table is a YAML mapping"):
        load_cost_table(lst)


# -------------------------------------------------------------------------------------------- compare
def photo(name, parts, view="full view"):
    return PhotoReport(path=name, status="assessed", visible_parts=list(parts), view_type=view)


def report(case_id, photos, findings, vehicle=None):
    """A valid CaseReport of hand-made photos and findings."""
    summary = CaseSummary(photos=len(photos), assessed=len(photos), skipped=0, failed=0, findings=len(findings),
                          findings_for_review=sum(f.needs_review for f in findings),
                          damaged_parts=sorted({f.part for f in findings}), verdict="hand-made")
    return CaseReport(case_id=case_id, created="2026-12-01T12:00:00+00:00", carcheck_version="test", models={},
                      config=AssessConfig(), summary=summary, findings=findings, photos=photos, vehicle=vehicle,
                      privacy="test")


def test_compare_categories_on_hand_made_reports():
    before = report("pickup", [photo("b1.jpg", ["hood", "front_bumper", "front_left_door"], "close-up"),
                               photo("b2.jpg", ["back_bumper", "trunk"], "close-up")],
                    [finding("front_bumper", "scratch", "small", photos=["b1.jpg"]),
                     finding("front_left_door", "dent", "small", photos=["b1.jpg"]),
                     finding("trunk", "dent", "small", photos=["b2.jpg"])])
    after = report("return", [photo("a1.jpg", ["hood", "front_bumper", "front_left_door", "back_left_door"]),
                              photo("a2.jpg", ["back_bumper", "trunk"])],
                   [finding("hood", "dent", "medium", photos=["a1.jpg"]),               # clean before -> new
                    finding("front_bumper", "scratch", "small", photos=["a1.jpg"]),     # same -> pre-existing
                    finding("front_left_door", "dent", "large", photos=["a1.jpg"]),     # grew -> changed
                    finding("back_left_door", "scratch", "small", photos=["a1.jpg"]),   # unseen before -> n.c.
                    finding("trunk", "dent", "small", photos=["a2.jpg"]),
                    finding("trunk", "scratch", "medium", photos=["a2.jpg"]),           # new type -> changed
                    finding("unassigned", "dent", "small", photos=["a2.jpg"])])
    c = compare_cases(before, after)
    status = {r.part: r.status for r in c.parts}
    assert status == {"hood": "new", "front_bumper": "pre-existing", "front_left_door": "changed",
                      "back_left_door": "not comparable", "trunk": "changed", "back_bumper": "clean",
                      "unassigned": "not comparable"}
    assert c.new_damage == ["hood"] and sorted(c.changed) == ["front_left_door", "trunk"]
    by = {r.part: r for r in c.parts}
    assert "not visible in any photo before" in by["back_left_door"].reason
    assert "grew from small to large" in by["front_left_door"].reason and by["hood"].after_photos == ["a1.jpg"]
    assert c.verdict.startswith("New damage on 1 part(s), changed on 2")
    # identical cases: nothing new
    same = compare_cases(after, after)
    assert not same.new_damage and not same.changed
    # a part not visible after cannot be compared, even when damaged before
    gone = compare_cases(before, report("r", [photo("a1.jpg", ["hood"])], []))
    assert {r.part: r.status for r in gone.parts}["trunk"] == "not comparable"


def test_compare_flags_small_new_damage_after_full_views_only():
    before = report("b", [photo("b1.jpg", ["hood", "front_bumper", "front_glass", "wheel", "left_mirror"])], [])
    after = report("a", [photo("a1.jpg", ["hood"], "close-up")], [finding("hood", "scratch", "small")])
    row = compare_cases(before, after).parts[0]
    assert row.status == "new" and row.needs_review and "only in full views" in row.reason


def test_same_vehicle_check_embeddings_and_make_model():
    rng = np.random.default_rng(0)
    car = rng.normal(size=(1, 16)).astype(np.float32)
    b = car + 0.01 * rng.normal(size=(3, 16)).astype(np.float32)
    a_same = car + 0.01 * rng.normal(size=(2, 16)).astype(np.float32)
    a_other = rng.normal(size=(2, 16)).astype(np.float32)

    def cos(x, y):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
        return 1 - (x * y).sum(1)

    r = report("r", [], [])
    assert same_vehicle_check(r, r, b, a_same, cos, 0.3).verdict == "same vehicle"
    other = same_vehicle_check(r, r, b, a_other, cos, 0.3)
    assert other.verdict == "different vehicle?" and other.distance > 0.3
    v = lambda label: VehicleIdentity(make_model_top3=[ClassScore(label=label, probability=0.9)],  # noqa: E731
                                      make_top3=[], in_scope=True, known_models=32)
    assert same_vehicle_check(report("b", [], [], v("Audi_A5")), report("a", [], [], v("Audi_A5"))).verdict == \
        "same vehicle"
    assert same_vehicle_check(report("b", [], [], v("Audi_A5")), report("a", [], [], v("BMW_X5"))).verdict == \
        "different vehicle?"
    assert same_vehicle_check(r, r).verdict == "unknown"


def test_compare_command_on_two_reports(tmp_path):
    from typer.testing import CliRunner

    from carcheck.cli import app

    before = report("pickup<script>", [photo("b1.jpg", ["hood"])], [])
    after = report("return", [photo("a1.jpg", ["hood"])], [finding("hood", "dent", "small", photos=["a1.jpg"])])
    files = []
    for r in (before, after):
        f = tmp_path / f"{r.case_id[:6]}.json"
        f.write_text(r.model_dump_json(), encoding="utf-8")
        files.append(f)
    res = CliRunner().invoke(app, ["compare", str(files[0]), str(files[1]), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert out["new_damage"] == ["hood"]
    html = (tmp_path / "out" / "compare.html").read_text()
    assert "pickup&lt;script&gt;" in html and "pickup<script>" not in html


def test_compare_command_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from carcheck.cli import app

    bad = tmp_path / "x.json"
    bad.write_text('{"case_id": 3}', encoding="utf-8")
    res = CliRunner().invoke(app, ["compare", str(bad), str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "notacarcheckreport.json" in "".join(res.output.split()), res.output
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "mustbeafolderofphotosorareport.json" in "".join(res.output.split()), res.output


# ---------------------------------------------------------------------------------------------- reuse
def _edited(img: Image.Image) -> dict[str, Image.Image]:
    import io

    w, h = img.size
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=35)
    return {"resized": img.resize((w // 2, h // 2)), "re-encoded": Image.open(io.BytesIO(buf.getvalue())),
            "cropped": img.crop((int(0.08 * w), int(0.02 * h), w - int(0.02 * w), h - int(0.08 * h))),
            "mirrored": img.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            "mirrored+cropped": img.crop((0, int(0.05 * h), int(0.92 * w), h)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)}


@needs_real
def test_reuse_finds_edited_copies_of_a_real_photo_and_not_other_photos(tmp_path):
    index = ReuseIndex(SQLiteHashStore(tmp_path / "index.sqlite"))
    originals = [(str(p), photo_hashes(np.asarray(Image.open(p).convert("RGB")))) for p in REAL[:12]]
    index.add_case("claim-2025-001", originals[:6])
    # reopened from the file: the index persists
    index = ReuseIndex(SQLiteHashStore(tmp_path / "index.sqlite"))
    target = Image.open(REAL[2]).convert("RGB")
    for kind, img in _edited(target).items():
        ms = index.check_case("claim-2026-777", [(kind, photo_hashes(img))])
        assert [(m.case_id, m.matched_photo) for m in ms] == [("claim-2025-001", str(REAL[2]))], kind
        assert not ms[0].same_case
    # six other real photos match nothing of the index, and nothing of each other
    assert index.check_case("claim-2026-778", originals[6:]) == []
    # a case re-assessed under its own id never matches itself
    assert index.check_case("claim-2025-001", originals[:6]) == []


@needs_real
def test_reuse_duplicates_inside_a_case_and_review_reasons(tmp_path):
    img = np.asarray(Image.open(REAL[0]).convert("RGB"))
    other = np.asarray(Image.open(REAL[1]).convert("RGB"))
    mirrored = img[:, ::-1]
    index = ReuseIndex()
    matches, reasons = reuse_check(index, "c1", [("a.jpg", None, img), ("b.jpg", None, other),
                                                 ("c.jpg", None, np.ascontiguousarray(mirrored))])
    assert [(m.photo, m.matched_photo, m.same_case, m.how) for m in matches] == [("c.jpg", "a.jpg", True, "mirrored copy")]
    assert reasons == {"c.jpg": [reasons["c.jpg"][0]]} and "duplicate of a.jpg in this case" in reasons["c.jpg"][0]
    # the case was indexed: a later case with the same photo names it
    matches, reasons = reuse_check(index, "c2", [("x.jpg", None, img)])
    assert {m.case_id for m in matches} == {"c1"} and "photo used before" in reasons["x.jpg"][0]
    assert "of case c1" in reasons["x.jpg"][0]


def test_sqlite_index_rejects_a_foreign_file(tmp_path):
    f = tmp_path / "notes.sqlite"
    f.write_text("just text, not a database", encoding="utf-8")
    with pytest.raises(ValueError, match="notes.sqlite: not a usable SQLite index"):
        SQLiteHashStore(f)
    with pytest.raises(ValueError, match="its folder does not exist"):
        SQLiteHashStore(tmp_path / "missing" / "i.sqlite")


# ----------------------------------------------------------------------------------------------- EXIF
def test_exif_rules():
    t = dt.datetime(2026, 5, 1, 10, 0)
    metas = [PhotoMeta("a.jpg", t, "Apple iPhone 13", "17.1"), PhotoMeta("b.jpg", t + dt.timedelta(minutes=5),
                                                                         "Apple iPhone 13", None),
             PhotoMeta("c.jpg", t + dt.timedelta(days=9), "Apple iPhone 13", None),
             PhotoMeta("d.jpg", t + dt.timedelta(minutes=9), "Canon EOS 80D", "Adobe Photoshop Lightroom 6.0"),
             PhotoMeta("e.jpg")]
    r = exif_reasons(metas)
    assert set(r) == {"c.jpg", "d.jpg"}
    assert "days from the case's other photos" in r["c.jpg"][0]
    assert any("taken with Canon EOS 80D" in x for x in r["d.jpg"])
    assert any("editing software: Adobe Photoshop Lightroom" in x for x in r["d.jpg"])
    # one phone, same hour, firmware version as Software: nothing to say
    assert exif_reasons(metas[:2]) == {}
    # two photos 3 days apart: both flagged (no majority)
    assert set(exif_reasons([metas[0], PhotoMeta("z.jpg", t + dt.timedelta(days=3))])) == {"a.jpg", "z.jpg"}
    assert exif_reasons(metas[:2] + [PhotoMeta("z.jpg", t + dt.timedelta(days=1))]) == {}


def test_read_photo_meta_from_a_written_file(tmp_path):
    f = tmp_path / "p.jpg"
    ex = Image.Exif()
    ex[271], ex[272], ex[305] = "Canon", "Canon EOS 80D", "GIMP 2.10"
    ex.get_ifd(0x8769)[36867] = "2026:05:01 10:00:00"
    Image.new("RGB", (64, 48), (90, 120, 150)).save(f, exif=ex)
    m = read_photo_meta(f, "p.jpg")
    assert m == PhotoMeta("p.jpg", dt.datetime(2026, 5, 1, 10, 0), "Canon EOS 80D", "GIMP 2.10")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert read_photo_meta(tmp_path / "junk.jpg", "junk.jpg") == PhotoMeta("junk.jpg")


# --------------------------------------------------------------------------------- in the assessment
def test_assess_cli_rejects_a_bad_cost_table_and_index_before_models_load(tmp_path):
    from typer.testing import CliRunner

    from carcheck.cli import app

    d = _table_dict()
    d["labour_rate"] = [90, 50]
    bad = _write(tmp_path, d, "bad_table.yaml")
    img = tmp_path / "p.jpg"
    Image.new("RGB", (80, 80)).save(img)
    res = CliRunner().invoke(app, ["assess", str(img), "--out", str(tmp_path / "o"), "--cost-table", str(bad)])
    flat = "".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2 and "bad_table.yaml:labour_rate:low90.0>high50.0" in flat, res.output
    res = CliRunner().invoke(app, ["assess", str(img), "--out", str(tmp_path / "o"), "--index",
                                   str(tmp_path / "no" / "i.sqlite")])
    assert res.exit_code == 2 and "itsfolderdoesnotexist" in "".join(res.output.split()), res.output


@needs_real
def test_assessment_report_has_estimate_and_reuse_across_cases(tmp_path):
    from carcheck.schema import AssessConfig as PipelineConfig
    from carcheck.pipeline.assess import Assessor
    from carcheck.report.html import write_report

    d = _table_dict()
    d["currency"] = "GBP"
    index = ReuseIndex(SQLiteHashStore(tmp_path / "claims.sqlite"))
    assessor = Assessor(PipelineConfig(gradcam=False), cost_table=_write(tmp_path, d), reuse_index=index)
    first, _ = assessor.assess([REAL[0], REAL[1]], "claim-1")
    assert first.estimate is not None and first.estimate.currency == "GBP" and first.reuse == []
    assert len(first.estimate.lines) == len(first.findings)
    # the second claim reuses a mirrored copy of claim-1's first photo
    copy = tmp_path / "copy.jpg"
    Image.open(REAL[0]).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(copy, quality=80)
    second, visuals = assessor.assess([copy, REAL[2]], "claim-2")
    assert [(m.case_id, Path(m.matched_photo).name, m.how) for m in second.reuse] == \
        [("claim-1", REAL[0].name, "mirrored copy")]
    reasons = {Path(p.path).name: p.review_reasons for p in second.photos}
    assert any(f"matches {REAL[0].name} of case claim-1" in r for r in reasons["copy.jpg"])
    assert not any("used before" in r for r in reasons[REAL[2].name])
    html = write_report(second, visuals, tmp_path / "out")["html"].read_text()
    assert "Repair estimate" in html and "Reused photos" in html and "claim-1" in html
    assert CaseReport.model_validate_json((tmp_path / "out" / "report.json").read_bytes()).reuse == second.reuse
