"""Fusion (Ma et al. II-D-1/2) and multi-view agreement (II-D-3/4) on constructed inputs."""

import numpy as np
import pytest

from carcheck.pipeline.agreement import PhotoFindings, reconcile, view_relations
from carcheck.pipeline.fusion import damaged_parts, size_class, visible_parts
from carcheck.schema import FusionConfig


def _probs(label, n):
    p = np.full((n, *label.shape), 0.02, np.float32)
    for c in range(n):
        p[c][label == c] = 0.9
    return p


def test_damage_spanning_two_parts_and_background_gives_three_regions():
    parts = np.zeros((100, 100), int)
    parts[:, :50] = 1  # door
    parts[:, 50:90] = 2  # hood; x >= 90 background
    dmg = np.zeros((100, 100), int)
    dmg[40:60, 30:95] = 1  # one dent across door, hood and background
    dmg[0:2, 0:2] = 2  # a 4-px scratch: below min_region_fraction
    regions = damaged_parts(_probs(parts, 3), _probs(dmg, 3), ["door", "hood"], ["dent", "scratch"],
                            FusionConfig(min_region_fraction=0.001))
    got = {(r.part, r.damage): r.area for r in regions}
    assert got == {("door", "dent"): 20 * 20, ("hood", "dent"): 20 * 40, ("unassigned", "dent"): 20 * 5}
    door = next(r for r in regions if r.part == "door")
    assert door.part_area == 5000 and abs(door.c_base - 0.9) < 1e-6
    assert door.bbox == (30, 40, 20, 20)


def test_two_separate_dents_on_one_part_are_two_regions():
    parts = np.ones((50, 50), int)
    dmg = np.zeros((50, 50), int)
    dmg[5:10, 5:10] = 1
    dmg[30:40, 30:40] = 1
    regions = damaged_parts(_probs(parts, 2), _probs(dmg, 2), ["door"], ["dent"], FusionConfig(min_region_fraction=0))
    assert sorted(r.area for r in regions) == [25, 100]


def test_visible_parts_and_size_classes():
    lab = np.zeros((100, 100), int)
    lab[:50] = 1
    lab[0, 0] = 2  # one pixel: not visible
    cfg = FusionConfig(visible_part_fraction=0.005, size_thresholds=(0.05, 0.25))
    assert visible_parts(lab, ["door", "hood"], cfg) == ["door"]
    assert size_class(0.01, cfg, False) == "small"
    assert size_class(0.10, cfg, False) == "medium"
    assert size_class(0.30, cfg, False) == "large"
    assert size_class(0.30, FusionConfig(closeup_scale=4.0), True) == "medium"


def test_k_agree_and_review_flags():
    full = PhotoFindings("full.jpg", {"door", "hood", "wheel"}, {("door", "dent"): (0.9, 0.1, "medium")})
    same = PhotoFindings("same.jpg", {"door", "hood", "wheel"}, {})
    close = PhotoFindings("close.jpg", {"door"}, {("door", "dent"): (0.8, 0.3, "large")})
    other = PhotoFindings("rear.jpg", {"trunk"}, {("trunk", "scratch"): (0.4, 0.01, "small")})
    rel = view_relations([full, same, close, other])
    assert rel["full.jpg"]["same_perspective_as"] == ["same.jpg"]
    assert rel["close.jpg"]["closeup_of"] == ["full.jpg", "same.jpg"]
    assert rel["rear.jpg"] == {"same_perspective_as": [], "closeup_of": []}
    f = {(x.part, x.damage): x for x in reconcile([full, same, close, other], review_threshold=0.5)}
    door = f[("door", "dent")]
    assert door.k_agree == pytest.approx(2 / 3) and door.c_base == pytest.approx(0.9)
    assert door.c_refined == pytest.approx(0.6) and not door.needs_review
    assert door.size_class == "large" and door.photos == ["full.jpg", "close.jpg"]
    trunk = f[("trunk", "scratch")]
    assert trunk.k_agree == 1.0 and trunk.needs_review  # 0.4 < 0.5
