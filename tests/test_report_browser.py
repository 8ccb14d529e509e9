"""The HTML and PDF report as a person sees them (issue 16 item 4): headless Chromium (Playwright, Debian's
chromium as in tests/test_review_browser.py) renders report.html, and the PDF's pages are rendered to images
(pypdfium2) and read back.

The report is the stored report of a real ``carcheck assess`` run on the 12-photo salvage case
(tests/fixtures/review_report_panamera.json) with that case's photos from ../shared/data/cases, drawn by the
real ``write_report`` (privacy blur, crops, diagram); no model runs, so the file stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carcheck.report.pdf import find_chromium
from conftest import data_path

FIXTURE = Path(__file__).parent / "fixtures" / "review_report_panamera.json"
pytestmark = pytest.mark.skipif(find_chromium() is None, reason="no chromium (apt-get install chromium; .ci/run does)")


@dataclass
class _Visual:
    image: np.ndarray
    part_label: np.ndarray
    damage_label: np.ndarray
    gradcam: np.ndarray | None = None


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(report, out folder) of report.html written from the fixture report and the case's photos."""
    from carcheck.report.html import write_report
    from carcheck.schema import CaseReport

    case = data_path("cases/salvage_panamera_167111")
    report = CaseReport.model_validate_json(FIXTURE.read_bytes())
    visuals = {}
    for p in report.photos:
        if p.status != "assessed":
            continue
        im = Image.open(case / p.path).convert("RGB")
        im.thumbnail((512, 512))
        a = np.asarray(im)
        visuals[p.path] = _Visual(a, np.zeros(a.shape[:2], np.uint8), np.zeros(a.shape[:2], np.uint8))
    out = tmp_path_factory.mktemp("report")
    write_report(report, visuals, out)
    return report, out


@pytest.fixture(scope="module")
def page(written, browser):
    _, out = written
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    pg.goto((out / "report.html").as_uri(), wait_until="load")
    return pg


def _top(page, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return box["y"]


def test_the_report_opens_with_the_vehicle_then_the_diagram_findings_review_and_photos(written, page):
    report, _ = written
    assert not report.vehicle.in_scope  # the Panamera is not one of the 32 models the classifier knows
    line = page.locator(".vehicle-line")
    assert line.is_visible() and line.inner_text() == "not one of the known models (the classifier knows 32)"
    assert _top(page, ".vehicle-line") < 200  # the first thing on screen, under the title
    order = ["#vehicle", "#diagram", "#damage", "#review", "#photos"]
    tops = [_top(page, s) for s in order]
    assert tops == sorted(tops) and len(set(tops)) == len(tops), dict(zip(order, tops))
    headings = page.locator("section > h2").all_inner_texts()
    assert headings[:3] == ["The car", "Damage found", "Needs review"], headings
    assert headings[-1] == "Per-photo detail" and "Repair estimate" in headings


def test_the_diagram_is_visible_and_coloured_by_the_findings(written, page):
    from carcheck.report.diagram import STATE_COLOURS, part_states

    report, _ = written
    svg = page.locator("#diagram svg.car-diagram")
    assert svg.is_visible()
    box = svg.bounding_box()
    assert box["width"] >= 100 and box["height"] >= 200
    states = part_states(report)
    assert states["back_bumper"] == "damaged"
    drawn = page.eval_on_selector_all("svg.car-diagram rect[data-part]",
                                      "rs => rs.map(r => [r.dataset.part, getComputedStyle(r).fill])")
    assert len(drawn) == 21  # 17 parts + 4 wheels
    hexes = {p: "#%02x%02x%02x" % tuple(int(v) for v in f[4:-1].split(",")) for p, f in drawn}
    assert all(hexes[p] == STATE_COLOURS[s] for p, s in states.items()), hexes
    # the summary line under the verdict names the same parts as the diagram
    damaged = ", ".join(sorted(p for p, s in states.items() if s == "damaged")).replace("_", " ")
    review = ", ".join(sorted(p for p, s in states.items() if s == "review")).replace("_", " ")
    assert f"Damaged: {damaged}. For review: {review}." in page.locator("p.summary").inner_text()


def test_confident_findings_are_listed_by_part_each_with_a_loaded_crop(written, page):
    report, _ = written
    confident = [f for f in report.findings if not f.needs_review]
    parts = list(dict.fromkeys(f.part.replace("_", " ") for f in confident))
    assert len(confident) == 6
    assert [t.lower() for t in page.locator("#damage .part > h3").all_inner_texts()] == parts
    crops = page.locator("#damage img.crop")
    assert crops.count() == len(confident)
    sizes = page.eval_on_selector_all("#damage img.crop", "is => is.map(i => [i.complete, i.naturalWidth, "
                                      "i.naturalHeight, i.getBoundingClientRect().width])")
    assert all(c and nw > 0 and nh > 0 and w > 100 for c, nw, nh, w in sizes), sizes
    # a crop is a crop: smaller than the photo it is cut from (512 px at network resolution)
    assert all(nw < 512 or nh < 384 for _, nw, nh, _ in sizes), sizes
    # nothing that needs review is in the confident list, and every review finding is in the review table
    damage_text = page.locator("#damage").inner_text()
    review_text = page.locator("#review").inner_text()
    assert "unassigned" not in damage_text
    first = next(f for f in report.findings if f.needs_review)
    assert first.review_reasons[0] in review_text
    assert page.locator("#review tr.review").count() == sum(f.needs_review for f in report.findings)
    assert page.locator("#photos .photo").count() == len(report.photos)


def test_the_pdf_has_the_same_report_on_pages_that_are_not_blank(written):
    pdfium = pytest.importorskip("pypdfium2")
    from carcheck.report.pdf import write_pdf

    report, out = written
    pdf_path = write_pdf(out / "report.html")
    assert pdf_path == out / "report.pdf" and pdf_path.stat().st_size > 10_000
    doc = pdfium.PdfDocument(str(pdf_path))
    try:
        assert len(doc) >= 2  # 12 photos with overlays do not fit on one page
        text = ""
        for i in range(len(doc)):
            page = doc[i]
            img = np.asarray(page.render(scale=1).to_pil().convert("RGB")).astype(int)
            ink = (img < 235).any(axis=2).mean()
            assert ink > 0.002, f"page {i + 1} of {len(doc)} is blank (ink {ink:.4f})"
            if i == 0:
                first_ink = ink
                # the diagram's damaged parts print in their red (#d62728) on the first page
                red = ((abs(img[..., 0] - 0xd6) < 30) & (abs(img[..., 1] - 0x27) < 30) & (abs(img[..., 2] - 0x28) < 30))
                assert red.sum() > 200, red.sum()
            text += page.get_textpage().get_text_range() + "\n"
        assert first_ink > 0.02
        first_page = doc[0].get_textpage().get_text_range()
        assert report.case_id in first_page and "not one of the known models" in first_page
        assert "Damage found" in text and "Needs review" in text and "Per-photo detail" in text
        assert "167111-12.png" in text
    finally:
        doc.close()


def test_assess_pdf_writes_report_pdf_beside_the_html(tmp_path):
    """``carcheck assess ... --pdf`` on one real photo of the case: report.pdf is the printed report."""
    pdfium = pytest.importorskip("pypdfium2")
    from typer.testing import CliRunner

    from carcheck.cli import app
    from carcheck.models.inference import DEFAULT_SEGMENTERS

    if not all(p.exists() for p in DEFAULT_SEGMENTERS):
        pytest.skip("shipped segmenter weights missing")
    photo = data_path("cases/salvage_panamera_167111") / "167111-12.png"
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["assess", str(photo), "--out", str(out), "--case-id", "pdf-case", "--pdf",
                                 "--no-gradcam"])
    assert r.exit_code == 0, r.output
    assert "report.pdf" in r.output
    doc = pdfium.PdfDocument(str(out / "report.pdf"))
    try:
        assert len(doc) >= 1 and "pdf-case" in doc[0].get_textpage().get_text_range()
    finally:
        doc.close()


def test_assess_pdf_without_a_browser_is_a_usage_error_before_any_model_loads(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import carcheck.pipeline.assess as pipeline_assess
    import carcheck.report.pdf as pdf
    from carcheck.cli import app

    def no_browser():
        raise pdf.PdfError("--pdf needs Chromium: apt-get install chromium")

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pdf, "check_pdf_support", no_browser)
    monkeypatch.setattr(pipeline_assess, "Assessor", no_model)
    r = CliRunner().invoke(app, ["assess", str(tmp_path), "--out", str(tmp_path / "out"), "--pdf"])
    assert r.exit_code == 2 and "needs Chromium" in r.output, r.output


def test_with_per_part_findings_the_confident_parts_are_what_is_listed(written, browser, tmp_path):
    """Schema >= 1.8: one card per confident physical part (its damage types, each with its size; a crop of
    its best region), parts for review in the review table with why."""
    from carcheck.report.html import write_report
    from carcheck.schema import PartFinding, PhotoTypeDecision

    report, _ = written
    case = data_path("cases/salvage_panamera_167111")
    rep = report.model_copy(deep=True)
    bumper = sorted({q for f in rep.findings if f.part == "back_bumper" for q in f.photos})
    rep.parts = [PartFinding(part="back_bumper", damages=["broken", "dent"], c_base=0.96, k_agree=0.8, c_refined=0.77,
                             views_damaged=4, views_visible=5, photos=bumper, needs_review=False),
                 PartFinding(part="hood", damages=["broken"], c_base=0.9, k_agree=0.4, c_refined=0.36,
                             views_damaged=2, views_visible=5, photos=["167111-04.png"], needs_review=True,
                             review_reasons=["seen clean in full views 167111-02.png"])]
    vin = next(p for p in rep.photos if p.path == "167111-09.png")
    vin.photo_type = PhotoTypeDecision(type="vin_dashboard", probability=0.97, exterior_probability=0.02,
                                       uncertain=False, search_exterior_damage=False, keep_state_heads=False,
                                       reason="VIN plate", probabilities={"vin_dashboard": 0.97})
    visuals = {}
    for name in bumper + ["167111-04.png"]:
        im = Image.open(case / name).convert("RGB")
        im.thumbnail((512, 512))
        a = np.asarray(im)
        visuals[name] = _Visual(a, np.zeros(a.shape[:2], np.uint8), np.zeros(a.shape[:2], np.uint8))
    write_report(rep, visuals, tmp_path)
    pg = browser.new_page()
    pg.goto((tmp_path / "report.html").as_uri(), wait_until="load")
    assert [t.lower() for t in pg.locator("#damage .part > h3").all_inner_texts()] == ["back bumper"]
    card = pg.locator("#damage .card").inner_text()
    assert "broken, dent" in card and "damaged in 4 of 5 view(s)" in card
    assert "broken: large" in card and "dent: " in card
    sizes = pg.eval_on_selector_all("#damage img.crop", "is => is.map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == 1 and sizes[0][0] and sizes[0][1] > 0
    rows = pg.locator("#review tr.part-review")
    assert rows.count() == 1 and "seen clean in full views 167111-02.png" in rows.inner_text()
    assert "hood" not in pg.locator("#damage").inner_text()
    summary = pg.locator("p.summary").inner_text()
    assert "Damaged: back bumper. For review: hood." in summary
    assert "Not searched for exterior damage: 167111-09.png (VIN / odometer / dashboard close-up)." in summary
    # (part, damage) findings under review that belong to no part stay in the review table
    n_unassigned = sum(f.part == "unassigned" and f.needs_review for f in rep.findings)
    assert pg.locator("#review tr.review").count() == 1 + n_unassigned
    pg.close()
