"""Damage size in cm from the typical part sizes (issue 16 item 3): constructed masks whose answer is known."""

from pathlib import Path

import numpy as np
import pytest

from carcheck.data.taxonomy import get_taxonomy
from carcheck.pipeline.size import (PartSizeError, default_part_sizes, estimate_size_cm, finding_sizes,
                                    load_part_sizes, region_size_cm)
from carcheck.schema import CaseReport, Finding, PhotoDetection, SizeCm, SizeConfig

DOOR = default_part_sizes().parts["front_left_door"]
W_TYP, H_TYP = DOOR.typical


def _masks(shape=(300, 400), part=(50, 100, 200, 100), region=(50, 120, 100, 20)):
    """Part and region rectangles ``(x, y, w, h)`` on an image of ``shape`` (H, W)."""
    pm, rm = np.zeros(shape, bool), np.zeros(shape, bool)
    x, y, w, h = part
    pm[y:y + h, x:x + w] = True
    x, y, w, h = region
    rm[y:y + h, x:x + w] = True
    return rm, pm


def test_the_shipped_table_declares_every_dsmlr_part_with_a_source():
    t = load_part_sizes()
    assert set(t.parts) == set(get_taxonomy("dsmlr_parts").classes)
    for name, row in t.parts.items():
        assert row.source.strip() and 0 < row.width_cm[0] <= row.width_cm[1], name
    assert t.parts["wheel"].multiple and not t.parts["hood"].multiple


def test_a_region_half_the_width_of_a_door_is_about_half_the_doors_width():
    rm, pm = _masks()  # door 200 x 100 px, region 100 x 20 px, door fully in frame
    s = estimate_size_cm(rm, pm, "front_left_door")
    assert s.reason is None and s.part_visible_fraction == 1.0
    assert s.width_cm == pytest.approx(W_TYP / 2, abs=0.1)
    assert s.width_range_cm == pytest.approx((DOOR.width_cm[0] / 2, DOOR.width_cm[1] / 2), abs=0.1)
    assert s.height_cm == pytest.approx(H_TYP * 20 / 100, abs=0.1)
    assert s.area_cm2 == pytest.approx((W_TYP / 2) * (H_TYP / 5), rel=1e-3)
    lo, hi = s.area_range_cm2
    assert lo == pytest.approx(DOOR.width_cm[0] / 2 * DOOR.height_cm[0] / 5, rel=1e-3)
    assert hi == pytest.approx(DOOR.width_cm[1] / 2 * DOOR.height_cm[1] / 5, rel=1e-3)
    assert "front_left_door" in s.basis and "200 x 100 px" in s.basis


def test_the_scale_is_independent_of_resolution_and_follows_the_part():
    a = estimate_size_cm(*_masks(), "front_left_door")
    big = estimate_size_cm(*_masks((600, 800), (100, 200, 400, 200), (100, 240, 200, 40)), "front_left_door")
    assert (big.width_cm, big.height_cm) == pytest.approx((a.width_cm, a.height_cm), abs=0.2)
    # the same pixels on a wheel (one diameter ~69 cm) are a smaller size than on a door
    w = estimate_size_cm(*_masks(), "wheel")
    assert w.width_cm == pytest.approx(sum(default_part_sizes().parts["wheel"].width_cm) / 4, abs=0.1)


def test_only_the_wheel_the_damage_touches_gives_the_scale():
    shape = (300, 600)
    pm = np.zeros(shape, bool)
    pm[100:200, 50:150] = True   # front wheel, 100 px across
    pm[100:200, 400:500] = True  # rear wheel
    rm = np.zeros(shape, bool)
    rm[140:160, 50:100] = True   # half the front wheel's width
    s = estimate_size_cm(rm, pm, "wheel")
    assert s.width_cm == pytest.approx(sum(default_part_sizes().parts["wheel"].width_cm) / 4, abs=0.1)
    # a door in two fragments is one door: its extent spans both
    d = estimate_size_cm(rm, pm, "front_left_door")
    assert "450 x 100 px" in d.basis


def test_a_part_cut_off_on_one_side_is_scaled_from_the_other_axis_with_a_wider_range():
    # the door runs off the left edge: 120 of its ~160 px are in frame; its height (150 px) is whole
    rm, pm = _masks(part=(0, 100, 120, 150), region=(20, 120, 100, 20))
    s = estimate_size_cm(rm, pm, "front_left_door")
    assert s.reason is None and "cut off horizontally" in s.basis
    scale_y = H_TYP / 150  # cm per px from the door's height
    assert s.width_cm == pytest.approx(100 * scale_y, abs=0.1)
    assert s.part_visible_fraction == pytest.approx(120 * scale_y / W_TYP, abs=0.01)
    # the upper bound: the door is at least the 120 visible px wide
    assert s.width_range_cm[1] == pytest.approx(100 * DOOR.width_cm[1] / 120, abs=0.1)
    assert s.width_range_cm[0] <= s.width_cm <= s.width_range_cm[1]


def test_no_estimate_when_the_part_is_mostly_cut_off_cut_on_both_axes_or_too_small():
    rm, pm = _masks(part=(0, 100, 60, 100), region=(10, 120, 30, 20))  # ~27% of the door's width in frame
    s = estimate_size_cm(rm, pm, "front_left_door")
    assert s.area_cm2 is None and "cut off" in s.reason and "% of its width" in s.reason
    rm, pm = _masks(part=(0, 0, 150, 150), region=(10, 10, 30, 20))
    s = estimate_size_cm(rm, pm, "front_left_door")
    assert s.area_cm2 is None and "horizontally and vertically" in s.reason
    rm, pm = _masks(part=(100, 100, 15, 40), region=(102, 110, 5, 5))
    s = estimate_size_cm(rm, pm, "left_mirror", cfg=SizeConfig(min_part_px=20))
    assert s.area_cm2 is None and "too small" in s.reason and "15 x 40 px" in s.reason


def test_no_estimate_for_unassigned_damage_or_an_undeclared_part():
    rm, pm = _masks()
    assert "no segmented part" in estimate_size_cm(rm, pm, "unassigned").reason
    assert "no typical size declared for 'roof'" in estimate_size_cm(rm, pm, "roof").reason
    with pytest.raises(ValueError, match="one shape"):
        estimate_size_cm(rm, pm[:10], "hood")


def test_region_size_cm_reads_the_part_from_the_label_map():
    rm, pm = _masks()
    names = ["hood", "front_left_door"]
    label = pm.astype(np.uint8) * 2
    assert region_size_cm(rm, label, names, "front_left_door") == estimate_size_cm(rm, pm, "front_left_door")


def test_a_bad_table_names_the_file_and_the_field(tmp_path):
    f = tmp_path / "sizes.yaml"
    f.write_text("version: 1\nparts:\n  hood: {width_cm: [160, 130], height_cm: [90, 130], source: x}\n")
    with pytest.raises(PartSizeError, match=r"sizes\.yaml: parts\.hood\.width_cm: .*low <= high"):
        load_part_sizes(f)
    f.write_text("version: 1\nparts:\n  hood: {width_cm: [130, 160], height_cm: [90, 130]}\n")
    with pytest.raises(PartSizeError, match=r"parts\.hood\.source"):
        load_part_sizes(f)
    f.write_text("- a list\n")
    with pytest.raises(PartSizeError, match="YAML mapping"):
        load_part_sizes(f)
    with pytest.raises(PartSizeError, match="cannot be read"):
        load_part_sizes(tmp_path / "missing.yaml")


def _det(part, area_px, size: SizeCm | None, frac: float = 0.1):
    return PhotoDetection(part=part, damage="dent", area_px=area_px, area_fraction_of_part=frac,
                          area_fraction_of_image=0.01, size_class="small", c_base=0.8, bbox_xywh=[0, 0, 1, 1],
                          size_cm=size)


def _report(photos, findings):
    from carcheck.pipeline.build import build_report
    from carcheck.schema import AssessConfig

    return build_report(case_id="s", files=len(photos), photos=photos, findings=findings, config=AssessConfig(),
                        models={}, taxonomies={"parts": "dsmlr_parts", "damage": "damage_type"})


def test_a_finding_takes_its_size_from_the_photo_where_it_covers_most_of_the_part_then_the_best_view():
    from carcheck.schema import PhotoReport

    cut = SizeCm(width_cm=30, height_cm=10, area_cm2=250, width_range_cm=(20, 40), height_range_cm=(8, 12),
                 area_range_cm2=(150, 400), part_visible_fraction=0.7, basis="cut")
    whole = SizeCm(width_cm=20, height_cm=8, area_cm2=120, width_range_cm=(18, 22), height_range_cm=(7, 9),
                   area_range_cm2=(100, 150), part_visible_fraction=1.0, basis="whole")
    none = SizeCm(reason="hood is cut off by the photo's edges horizontally and vertically: no scale")
    photos = [PhotoReport(path="a.jpg", status="assessed", detections=[_det("hood", 900, cut, 0.15)]),
              PhotoReport(path="b.jpg", status="assessed", detections=[_det("hood", 500, whole, 0.1),
                                                                         _det("hood", 100, whole, 0.05)]),
              PhotoReport(path="c.jpg", status="assessed", detections=[_det("hood", 9000, none, 0.9)]),
              PhotoReport(path="d.jpg", status="assessed", detections=[_det("hood", 900, cut, 0.4)]),
              PhotoReport(path="e.jpg", status="assessed",
                          detections=[_det("unassigned", 50, SizeCm(reason="the damage lies on no segmented part"))])]
    f = lambda part, ps: Finding(part=part, damage="dent", size_class="small", area_fraction_of_part=0.1,  # noqa: E731
                                 c_base=0.8, k_agree=1, c_refined=0.8, needs_review=False, photos=ps)
    rep = _report(photos, [f("hood", ["a.jpg", "b.jpg", "c.jpg"]), f("hood", ["a.jpg", "b.jpg", "d.jpg"]),
                           f("unassigned", ["e.jpg"])])
    finding_sizes(rep)
    tie, most, un = rep.findings
    # a and b: the dent covers 15% of the hood in each (b: two regions); b shows the hood whole
    assert tie.size_cm_photo == "b.jpg" and tie.size_cm.width_cm == 20  # c (90%) gives no scale
    assert tie.size_cm.area_cm2 == 240 and tie.size_cm.area_range_cm2 == (200, 300)  # two regions summed
    assert "sum of 2 regions" in tie.size_cm.basis
    assert most.size_cm_photo == "d.jpg" and most.size_cm.area_cm2 == 250  # 40% of the hood: d, cut or not
    assert un.size_cm.area_cm2 is None and "no segmented part" in un.size_cm.reason and un.size_cm_photo is None


def test_a_schema_16_report_without_sizes_still_loads_and_renders(tmp_path):
    from carcheck.report.html import write_report

    fixture = Path(__file__).parent / "fixtures" / "review_report_panamera.json"
    rep = CaseReport.model_validate_json(fixture.read_bytes())
    assert all(d.size_cm is None for p in rep.photos for d in p.detections)
    assert all(f.size_cm is None for f in rep.findings)
    finding_sizes(rep)  # nothing to size: stays None, no error
    assert all(f.size_cm is None for f in rep.findings)
    html = write_report(rep, {}, tmp_path)["html"].read_text()
    assert "size in cm not estimated" not in html


def test_the_html_report_states_the_size_in_cm_and_why_not(tmp_path):
    from carcheck.report.html import write_report
    from carcheck.schema import PhotoReport

    s = SizeCm(width_cm=12.3, height_cm=4.5, area_cm2=40.2, width_range_cm=(10.1, 14.0), height_range_cm=(4, 5),
               area_range_cm2=(30.0, 55.5), part_visible_fraction=1.0, basis="front_left_door typically ...")
    none = SizeCm(reason="the damage lies on no segmented part: no scale")
    photos = [PhotoReport(path="a.jpg", status="assessed", detections=[_det("front_left_door", 900, s),
                                                                       _det("unassigned", 90, none)])]
    fs = [Finding(part="front_left_door", damage="dent", size_class="small", area_fraction_of_part=0.1, c_base=0.8,
                  k_agree=1, c_refined=0.8, needs_review=False, photos=["a.jpg"]),
          Finding(part="unassigned", damage="dent", size_class="small", area_fraction_of_part=0.1, c_base=0.3,
                  k_agree=1, c_refined=0.3, needs_review=True, photos=["a.jpg"])]
    rep = _report(photos, fs)
    finding_sizes(rep)
    html = write_report(rep, {}, tmp_path)["html"].read_text()
    assert "about 12 x 4.5 cm (10-14 x 4.0-5.0 cm), 40 cm² (30-56 cm²)" in html
    assert "size in cm not estimated: no photo gives a scale: the damage lies on no segmented part: no scale" in html


#: (part a, part b, axis): parts photographed side by side in one plane, so the ratio of their extents in px
#: is about the ratio of their real sizes
SIDE_BY_SIDE = [("wheel", "front_left_door", "h"), ("back_left_door", "front_left_door", "h"),
                ("left_mirror", "front_left_door", "h"), ("front_left_light", "front_bumper", "w"),
                ("back_left_light", "back_bumper", "w"), ("back_glass", "back_bumper", "w"),
                ("hood", "front_bumper", "w")]


@pytest.fixture(scope="module")
def dsmlr_extents():
    """Image id -> part -> [(w, h)] of DSMLR ground-truth boxes (train split) not cut by the image's edges."""
    import collections
    import json

    from conftest import data_path

    d = json.loads((data_path("car_parts") / "trainingset" / "annotations.json").read_text())
    cats = {c["id"]: c["name"] for c in d["categories"]}
    imgs = {i["id"]: i for i in d["images"]}
    out = collections.defaultdict(lambda: collections.defaultdict(list))
    for a in d["annotations"]:
        im, (x, y, w, h) = imgs[a["image_id"]], a["bbox"]
        if x > 1 and y > 1 and x + w < im["width"] - 1 and y + h < im["height"] - 1 and min(w, h) >= 20:
            out[a["image_id"]][cats[a["category_id"]]].append((w, h))
    return out


@pytest.mark.parametrize("a, b, axis", SIDE_BY_SIDE)
def test_the_table_agrees_with_dsmlr_ground_truth_on_parts_seen_side_by_side(dsmlr_extents, a, b, axis):
    t = default_part_sizes().parts
    k = 1 if axis == "h" else 0
    ratios = [pa[a][0][k] / pa[b][0][k] for pa in dsmlr_extents.values()
              if len(pa.get(a, ())) == 1 and len(pa.get(b, ())) == 1]
    assert len(ratios) >= 40, (a, b, len(ratios))
    ra, rb = (t[a].height_cm, t[b].height_cm) if axis == "h" else (t[a].width_cm, t[b].width_cm)
    measured, mid = float(np.median(ratios)), (sum(ra) / 2) / (sum(rb) / 2)
    assert ra[0] / rb[1] <= measured <= ra[1] / rb[0], (measured, ra, rb)  # inside the table's range
    assert abs(mid / measured - 1) < 0.2, (a, b, round(measured, 3), round(mid, 3))
