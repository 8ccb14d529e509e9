"""One end of the car per photo on the part map (pipeline/part_ends.py)."""

import numpy as np
import pytest

from carcheck.data.taxonomy import get_taxonomy
from carcheck.pipeline.part_ends import consistent_ends, end_shares

NAMES = ["background", *get_taxonomy("dsmlr_parts").classes]
I = {n: i for i, n in enumerate(NAMES)}


def _map(**areas):
    """A 100 x 100 label map with each named part covering that many rows."""
    m = np.zeros((100, 100), np.uint8)
    row = 0
    for name, rows in areas.items():
        m[row:row + rows] = I[name]
        row += rows
    return m


def test_a_hood_blob_in_a_rear_view_becomes_the_trunk():
    m = _map(back_bumper=30, back_glass=20, back_left_light=5, hood=4, back_left_door=20)
    fs, rs = end_shares(m, NAMES)
    assert fs == pytest.approx(4 / 79) and rs == pytest.approx(55 / 79)
    out = consistent_ends(m, NAMES, 5.0)
    assert (out == I["trunk"]).sum() == 400 and not (out == I["hood"]).any()
    assert (out == I["back_left_door"]).sum() == 2000  # parts of neither end are untouched
    assert (m == I["hood"]).sum() == 400  # the input is not modified


def test_a_front_view_takes_back_the_rear_labels_including_the_tailgate():
    m = _map(front_bumper=30, hood=25, front_right_light=5, back_bumper=3, tailgate=2, trunk=2)
    out = consistent_ends(m, NAMES, 5.0)
    assert (out == I["front_bumper"]).sum() == 3300
    assert (out == I["hood"]).sum() == 2900 and not np.isin(out, [I["tailgate"], I["trunk"], I["back_bumper"]]).any()


def test_a_side_view_with_both_ends_is_left_alone():
    m = _map(front_bumper=10, hood=10, back_bumper=10, trunk=8, front_left_door=30, back_left_door=30)
    assert np.array_equal(consistent_ends(m, NAMES, 5.0), m)
    # the rule needs one end to dominate by more than k: front 20 rows against rear 18 is no dominance at k = 1.5
    assert np.array_equal(consistent_ends(m, NAMES, 1.5), m)


def test_bad_ratio_and_other_taxonomies():
    m = _map(back_bumper=30, hood=4)
    with pytest.raises(ValueError, match="k must be > 1"):
        consistent_ends(m, NAMES, 1.0)
    other = ["background", "door", "bumper"]
    assert np.array_equal(consistent_ends(np.ones((4, 4), np.uint8), other, 5.0), np.ones((4, 4), np.uint8))


def test_the_assessment_applies_it_to_the_part_map(monkeypatch):
    from carcheck.models.inference import DEFAULT_SEGMENTERS

    if not all(p.exists() for p in DEFAULT_SEGMENTERS):
        pytest.skip("shipped segmenter weights missing")
    import carcheck.pipeline.photo as photo_rules
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig
    from conftest import data_path

    photo = sorted(data_path("car_parts/testset/JPEGImages").glob("*.jpg"))[0]
    seen = []

    def spy(label, names, k):
        seen.append((label.shape, names[0], k))
        return label

    from carcheck.schema import FusionConfig as FusionDefault

    monkeypatch.setattr(photo_rules, "consistent_ends", spy)  # one photo's rules: pipeline/photo.py
    Assessor(AssessConfig(gradcam=False), heads={}).assess([photo], case_id="ends")
    assert seen and seen[0][1] == "background" and seen[0][2] == FusionDefault().end_dominance
    seen.clear()
    from carcheck.schema import FusionConfig

    Assessor(AssessConfig(gradcam=False, fusion=FusionConfig(end_dominance=None)), heads={}).assess(
        [photo], case_id="ends-off")
    assert seen == []
