"""Damage instances in the report (issue 27 item 3): one photo's instances from its maps, a part finding's
instances and count, scaling to the photo's pixels, and the HTML outlines."""

import numpy as np

from carcheck.pipeline.instances import (attach_part_instances, outline, part_instances, photo_instances,
                                         split_at_necks)
from carcheck.pipeline.photo import photo_regions
from carcheck.pipeline.size import to_photo_pixels
from carcheck.schema import DamageInstance, FusionConfig, PartFinding, PhotoReport

PARTS = ["front_left_door", "back_left_door"]
DAMAGES = ["dent", "scratch"]


def _maps(h=64, w=96):
    """Two doors side by side (columns < 48 / >= 48); probabilities one-hot with 0.9 on the label."""
    part_label = np.zeros((h, w), np.int64)
    part_label[8:56, :48] = 1
    part_label[8:56, 48:] = 2
    damage_label = np.zeros((h, w), np.int64)
    return part_label, damage_label


def _probs(label, n):
    p = np.full((n + 1,) + label.shape, 0.1 / n, np.float32)
    for c in range(n + 1):
        p[c][label == c] = 0.9
    return p


def _instances(part_label, damage_label, width=96, height=64):
    part_prob, damage_prob = _probs(part_label, len(PARTS)), _probs(damage_label, len(DAMAGES))
    cfg = FusionConfig(min_region_fraction=0.0005, end_dominance=None)
    pl, dl, regions = photo_regions(part_prob, damage_prob, PARTS, DAMAGES, cfg, None, True, np.int64)
    return regions, photo_instances("a.jpg", dl, damage_prob, pl, PARTS, DAMAGES, regions, 0.0005, width, height,
                                    None, cfg.instance_split_core_fraction, cfg.instance_split_types)


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_two_touching_dents_stay_two_and_a_scratch_stays_whole():
    """Issue 27 item 4: two dents whose pixels touch (one component of the damage map) are two instances with the
    shipped config; a scratch of the same shape is not split (only dents are: bench/studies/instance_split.py)."""
    part_label, damage_label = _maps()
    two = _disc(damage_label.shape, 32, 30, 9) | _disc(damage_label.shape, 32, 48, 9)  # touching at the middle column
    import cv2
    assert cv2.connectedComponents(two.astype(np.uint8), connectivity=8)[0] == 2  # one component (+ background)
    damage_label[two] = 1
    _, inst = _instances(part_label, damage_label)
    assert [i.damage for i in inst] == ["dent", "dent"]
    assert sum(i.area_px for i in inst) == two.sum()
    assert inst[0].bbox_xywh[0] < 30 < 48 < inst[1].bbox_xywh[0] + inst[1].bbox_xywh[2] or \
        inst[1].bbox_xywh[0] < 30 < 48 < inst[0].bbox_xywh[0] + inst[0].bbox_xywh[2]  # one each side of the neck
    centres = sorted(i.bbox_xywh[0] + i.bbox_xywh[2] / 2 for i in inst)
    assert abs(centres[0] - 30.5) <= 2 and abs(centres[1] - 48.5) <= 2
    damage_label[two] = 2  # the same shape as a scratch
    _, inst = _instances(part_label, damage_label)
    assert [i.damage for i in inst] == ["scratch"]


def test_split_at_necks_keeps_an_even_band_whole():
    band = np.zeros((40, 120), bool)
    band[15:25, 5:115] = True  # a long scratch of even width: one connected core
    assert len(split_at_necks(band, 0.5)) == 1
    assert len(split_at_necks(band, None)) == 1
    two = _disc((60, 90), 30, 25, 14) | _disc((60, 90), 30, 60, 14)
    two[28:33, 25:61] = True  # a thin bridge between two thick blobs
    pieces = split_at_necks(two, 0.5)
    assert len(pieces) == 2 and not (pieces[0] & pieces[1]).any() and ((pieces[0] | pieces[1]) == two).all()


def test_a_scratch_across_two_doors_is_one_instance_on_both():
    part_label, damage_label = _maps()
    damage_label[30:33, 20:80] = 2  # one long scratch over the door edge at column 48
    regions, inst = _instances(part_label, damage_label)
    assert len(regions) == 2  # the fusion splits it at the part boundary (one finding per part)
    assert len(inst) == 1
    i = inst[0]
    assert i.damage == "scratch" and i.id == 1 and set(i.parts) == set(PARTS)
    assert i.parts[0] == "back_left_door"  # 32 of its 60 columns lie on the back door
    assert i.area_px == 180 and i.bbox_xywh == [20, 30, 60, 3]
    xs, ys = i.polygon[0::2], i.polygon[1::2]
    assert min(xs) >= 20 and max(xs) <= 80 and min(ys) >= 30 and max(ys) <= 33 and len(xs) >= 4


def test_two_dents_with_a_gap_stay_two_largest_first():
    part_label, damage_label = _maps()
    damage_label[20:30, 10:20] = 1  # 100 px
    damage_label[20:34, 21:35] = 1  # 196 px, one background column between them
    _, inst = _instances(part_label, damage_label)
    assert [(i.id, i.damage, i.area_px) for i in inst] == [(1, "dent", 196), (2, "dent", 100)]
    assert all(i.parts == ["front_left_door"] for i in inst)


def test_instances_in_photo_pixels_and_tiny_ones_dropped():
    part_label, damage_label = _maps()
    damage_label[20:30, 10:20] = 1
    damage_label[40, 60] = 2  # one pixel: below the minimum area (0.0005 * 64 * 96 = 3 px)
    _, inst = _instances(part_label, damage_label, width=192, height=128)  # the photo is twice the map
    assert len(inst) == 1
    assert inst[0].bbox_xywh == [20, 40, 20, 20] and inst[0].area_px == 400
    report = PhotoReport(path="a.jpg", status="assessed", width=192, height=128, instances=inst)
    to_photo_pixels(report, 384, 256)  # a reduced decode scaled to the photo's own pixels
    i = report.instances[0]
    assert i.bbox_xywh == [40, 80, 40, 40] and i.area_px == 1600
    assert max(i.polygon[0::2]) <= 80 and min(i.polygon[0::2]) >= 40


def test_outline_is_bounded_and_simplified():
    m = np.zeros((200, 200), bool)
    yy, xx = np.mgrid[:200, :200]
    m[(yy - 100) ** 2 + (xx - 100) ** 2 < 80 ** 2] = True  # a disc: hundreds of contour points
    poly = outline(m, 2.0, 0.5)
    assert 6 <= len(poly) <= 2 * 64
    assert 2 * 19 <= min(poly[0::2]) and max(poly[0::2]) <= 2 * 181
    assert outline(np.zeros((5, 5), bool)) == []
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    assert len(outline(one)) == 8  # a one-pixel instance: its pixel box


def _inst(photo, id, damage, parts, area=100.0):
    return DamageInstance(id=id, photo=photo, damage=damage, score=0.8, bbox_xywh=[0, 0, 10, 10], area_px=area,
                          parts=parts, polygon=[0, 0, 10, 0, 10, 10])


def test_a_part_counts_the_most_instances_of_one_photo():
    photos = [
        PhotoReport(path="a.jpg", status="assessed", instances=[
            _inst("a.jpg", 1, "dent", ["hood"]), _inst("a.jpg", 2, "dent", ["hood", "front_bumper"]),
            _inst("a.jpg", 3, "dent", ["hood"]), _inst("a.jpg", 4, "scratch", ["hood"]),
            _inst("a.jpg", 5, "dent", ["front_bumper"])]),
        PhotoReport(path="b.jpg", status="assessed", instances=[
            _inst("b.jpg", 1, "dent", ["hood"]), _inst("b.jpg", 2, "dent", ["hood"])]),
        PhotoReport(path="c.jpg", status="assessed", instances=[  # not a photo of the finding
            _inst("c.jpg", i, "dent", ["hood"]) for i in range(1, 6)]),
    ]
    pf = PartFinding(part="hood", damages=["dent"], c_base=0.8, k_agree=1.0, c_refined=0.8, views_damaged=2,
                     views_visible=2, photos=["a.jpg", "b.jpg"], needs_review=False)
    listed, count = part_instances(pf, photos)
    assert count == 3  # three dents in a.jpg (the scratch is not one of the part's types; #5 is on the bumper)
    assert [(i.photo, i.id) for i in listed] == [("a.jpg", 1), ("a.jpg", 2), ("a.jpg", 3), ("b.jpg", 1), ("b.jpg", 2)]
    pf.damages = ["dent", "scratch"]
    attach_part_instances([pf], photos)
    assert pf.instance_count == 4 and len(pf.instances) == 6


def test_html_outlines_and_lists_the_instances(tmp_path):
    import re

    from carcheck.report.html import draw_instances, instances_text, write_report
    from carcheck.schema import AssessConfig, CaseReport, CaseSummary, SizeCm

    img = np.full((64, 96, 3), 128, np.uint8)
    inst = DamageInstance(id=1, photo="a.jpg", damage="dent", score=0.9, bbox_xywh=[40, 40, 80, 40], area_px=3200,
                          parts=["hood"], polygon=[40, 40, 120, 40, 120, 80, 40, 80],
                          size_cm=SizeCm(width_cm=12, height_cm=6, area_cm2=72, width_range_cm=(10, 14),
                                         height_range_cm=(5, 7), area_range_cm2=(50, 98), basis="hood"))
    drawn = draw_instances(img, [inst], (0.5, 0.5), {"dent": (255, 0, 0)})  # photo 192x128 -> image 96x64
    changed = np.argwhere((drawn != img).any(-1))
    assert len(changed) > 0 and (img == 128).all()  # drawn on a copy
    assert changed[:, 1].min() >= 17 and changed[:, 1].max() <= 63  # around x 20..60 (outline + its edge)
    assert drawn[30, 40].tolist() == [128, 128, 128]  # the inside is not filled
    pf = PartFinding(part="hood", damages=["dent"], c_base=0.9, k_agree=1.0, c_refined=0.9, views_damaged=1,
                     views_visible=1, photos=["a.jpg"], needs_review=False, instances=[inst], instance_count=1)
    assert instances_text(pf).startswith("1 instance(s) in one photo, the largest about 12 x 6.0 cm (10-14")
    report = CaseReport(case_id="x", created="now", carcheck_version="0", models={}, config=AssessConfig(),
                        taxonomies={"parts": "dsmlr_parts", "damage": "cardd_damage"},
                        summary=CaseSummary(photos=1, assessed=1, skipped=0, failed=0, findings=0,
                                            findings_for_review=0, damaged_parts=["hood"], verdict="v"),
                        findings=[], parts=[pf], photos=[PhotoReport(path="a.jpg", status="assessed", width=192,
                                                                     height=128, instances=[inst])], privacy="p")

    class V:
        image, part_label, damage_label = img, np.zeros((64, 96), np.uint8), np.zeros((64, 96), np.uint8)

    html = write_report(report, {"a.jpg": V()}, tmp_path)["html"].read_text()
    assert html.count('<table class="instances">') == 1 and "1 instance(s), outlined and numbered" in html
    import base64
    import io

    from PIL import Image
    uri = re.search(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)" alt="damage">', html).group(1)
    damage_img = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")).astype(int)
    edge = np.abs(damage_img[19:22, 25:55] - 128).max(-1)  # the outline's top edge (y 40 / 2 = 20, x 25..55)
    inside = np.abs(damage_img[28:33, 30:50] - 128).max(-1)
    assert edge.mean() > 40 and inside.mean() < 10  # the outline is drawn on the damage overlay, not filled
    assert re.search(r"<td>dent</td><td>hood</td><td class=\"num\">3200</td>", html)
    assert "1 instance(s) in one photo, the largest about 12 x 6.0 cm" in html


def test_no_damage_no_instances():
    part_label, damage_label = _maps()
    _, inst = _instances(part_label, damage_label)
    assert inst == []


def test_second_look_where_the_damage_filter_says_damaged():
    """Issue 26: no damage at the argmax, but the damage filter is sure: the map is read again at the lower
    threshold and the regions carry why; not with the filter unsure, nor with the rule off."""
    from carcheck.pipeline.fusion import low_threshold_label
    from carcheck.pipeline.photo import photo_detections
    from carcheck.schema import AssessConfig

    part_label, _ = _maps()
    part_prob = _probs(part_label, len(PARTS))
    damage = np.zeros((3, 64, 96), np.float32)
    damage[0], damage[1], damage[2] = 0.8, 0.15, 0.05  # no damage everywhere ...
    damage[:, 20:30, 10:30] = np.array([0.45, 0.40, 0.15])[:, None, None]  # ... a dent the argmax does not pick
    lab = low_threshold_label(damage, 0.5)
    assert lab.sum() == 200 and set(np.unique(lab)) == {0, 1}
    cfg = AssessConfig()
    assert cfg.fusion.missed_damage_filter_at_least == 0.9
    d = photo_detections("a.jpg", part_prob, damage, PARTS, DAMAGES, cfg, None, 96, 64, p_damaged=0.95)
    assert [(x.part, x.damage) for x in d.detections] == [("front_left_door", "dent")]
    assert d.detections[0].c_base <= 0.5 and "damage filter says damaged (P=0.95)" in d.detections[0].review_reasons[-1]
    assert len(d.instances) == 1 and d.findings.findings
    assert photo_detections("a.jpg", part_prob, damage, PARTS, DAMAGES, cfg, None, 96, 64, p_damaged=0.5).detections == []
    assert photo_detections("a.jpg", part_prob, damage, PARTS, DAMAGES, cfg, None, 96, 64).detections == []
    off = AssessConfig(fusion=FusionConfig(missed_damage_filter_at_least=None))
    assert photo_detections("a.jpg", part_prob, damage, PARTS, DAMAGES, off, None, 96, 64, p_damaged=0.99).detections == []
