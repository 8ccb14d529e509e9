"""The second look (issue 26): where the first look finds no damage but the damage filter is sure, a finer
damage pass (fusion.missed_damage_longest_side) and then the low-threshold read; a part only second looks show
goes to review, and a second look adds views but never a higher C_base (pipeline/photo.py, agreement.py)."""

import numpy as np
import pytest

from carcheck.pipeline.agreement import PhotoFindings, reconcile, reconcile_parts
from carcheck.pipeline.photo import photo_detections
from carcheck.schema import AssessConfig, FusionConfig

PARTS = ["front_left_door", "back_left_door"]
DAMAGES = ["dent", "scratch"]


def _part_prob(h=64, w=96):
    """Two doors side by side; probabilities 0.9 on the label."""
    label = np.zeros((h, w), np.int64)
    label[8:56, :48], label[8:56, 48:] = 1, 2
    p = np.full((3, h, w), 0.05, np.float32)
    for c in range(3):
        p[c][label == c] = 0.9
    return p


def _no_damage(h=64, w=96):
    d = np.zeros((3, h, w), np.float32)
    d[0], d[1], d[2] = 0.9, 0.06, 0.04
    return d


def test_the_finer_pass_is_read_first_and_only_when_the_second_look_runs():
    parts, coarse = _part_prob(), _no_damage()
    fine = _no_damage()
    fine[:, 20:30, 60:80] = np.array([0.2, 0.7, 0.1])[:, None, None]  # a dent on the back door the finer pass sees
    calls = []

    def finer():
        calls.append(1)
        return fine

    cfg = AssessConfig()
    assert cfg.fusion.missed_damage_longest_side == 1024
    d = photo_detections("a.jpg", parts, coarse, PARTS, DAMAGES, cfg, None, 96, 64, p_damaged=0.95, damage_second=finer)
    assert [(x.part, x.damage) for x in d.detections] == [("back_left_door", "dent")] and calls == [1]
    assert d.detections[0].c_base == pytest.approx(0.7) and "second pass at 1024 px" in d.detections[0].review_reasons[-1]
    assert d.findings.second_look and "P=0.95" in d.findings.second_look
    assert len(d.instances) == 1 and d.instances[0].damage == "dent"  # instances from the finer map too
    # the damage filter unsure, or the first look found damage: the finer pass never runs
    calls.clear()
    assert photo_detections("a.jpg", parts, coarse, PARTS, DAMAGES, cfg, None, 96, 64, p_damaged=0.5,
                            damage_second=finer).detections == [] and calls == []
    seen = _no_damage()
    seen[:, 20:30, 10:30] = np.array([0.2, 0.1, 0.7])[:, None, None]
    first = photo_detections("a.jpg", parts, seen, PARTS, DAMAGES, cfg, None, 96, 64, p_damaged=0.99, damage_second=finer)
    assert [(x.part, x.damage) for x in first.detections] == [("front_left_door", "scratch")] and calls == []
    assert first.findings.second_look is None
    # the finer pass finds nothing either: the low-threshold read of the first map, with its own reason
    faint = _no_damage()
    faint[:, 40:50, 10:30] = np.array([0.45, 0.40, 0.15])[:, None, None]
    low = photo_detections("a.jpg", parts, faint, PARTS, DAMAGES, cfg, None, 96, 64, p_damaged=0.95,
                           damage_second=lambda: _no_damage())
    assert [(x.part, x.damage) for x in low.detections] == [("front_left_door", "dent")]
    assert "P(damage) >= 0.3" in low.detections[0].review_reasons[-1] and "P(damage) >= 0.3" in low.findings.second_look


def test_a_part_only_second_looks_show_goes_to_review_and_they_never_raise_c_base():
    rear = {"back_bumper", "trunk"}
    why = "found in a second pass at 1024 px because the damage filter says damaged (P=0.97)"
    first = PhotoFindings("a.jpg", rear, {("back_bumper", "dent"): (0.6, 0.2, "medium")})
    second = PhotoFindings("b.jpg", rear, {("back_bumper", "dent"): (0.95, 0.2, "medium")}, second_look=why)
    (part,) = reconcile_parts([first, second], reconcile([first, second], 0.5), 0.5)
    assert part.c_base == pytest.approx(0.6) and part.k_agree == 1.0 and not part.needs_review  # 0.6 x 2/2 views
    (pair,) = reconcile([first, second], 0.5)
    assert pair.c_base == pytest.approx(0.6) and not pair.needs_review
    only = PhotoFindings("c.jpg", rear, {("back_bumper", "dent"): (0.9, 0.2, "medium")}, second_look=why)
    (part,) = reconcile_parts([only], reconcile([only], 0.5), 0.5)
    assert part.c_refined == pytest.approx(0.9) and part.needs_review and why in part.review_reasons
    (pair,) = reconcile([only], 0.5)
    assert pair.needs_review and why in pair.review_reasons


def test_the_runner_finer_damage_map_and_a_crushed_front_it_finds():
    from carcheck.models.inference import DEFAULT_SEGMENTERS
    from conftest import data_path

    if not all(p.exists() for p in DEFAULT_SEGMENTERS):
        pytest.skip("shipped segmenter weights missing")
    from carcheck.data.images import load_image
    from carcheck.pipeline.assess import Assessor

    a = Assessor(AssessConfig(gradcam=False), heads={})
    photo = data_path("cases/salvage_panamera_167111/167111-04.png")
    img = load_image(photo)
    img = getattr(img, "array", img)
    prob = a.damage_map_at(np.asarray(img), 1024, (48, 64))
    assert prob.shape == (len(a.damage_names) + 1, 48, 64) and prob.dtype == np.float32
    assert np.allclose(prob.sum(0), 1.0, atol=1e-4)
    assert (prob[1:].sum(0) > 0.5).mean() > 0.02  # the crushed rear is damage at 1024 px too
    off = Assessor(AssessConfig(gradcam=False, fusion=FusionConfig(missed_damage_longest_side=None)), heads={})
    assert off.finer_damage(np.asarray(img), None) is None
    from pathlib import Path

    mustang = Path(__file__).resolve().parents[1] / "data" / "cases_extra" / "dmd_ford_mustang_white" / "photo_01.jpg"
    if not mustang.is_file():
        pytest.skip(f"{mustang} not built (bench/cases_extra/README.md: bash bench/cases_extra/build_cases_extra.sh ...)")
    full = Assessor(AssessConfig(gradcam=False))  # with the damage filter: the second look needs it
    parts = {d.part for d in full.assess([mustang], case_id="mustang")[0].photos[0].detections}
    assert {"front_bumper", "hood"} & parts, parts  # the crushed front, which the 512 px pass does not see
