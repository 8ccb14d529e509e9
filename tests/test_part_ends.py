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


def _columns(*blocks, rows=(20, 80)):
    """A 100 x 100 label map with each (name, width) block side by side in rows 20-80 (name None: background)."""
    m = np.zeros((100, 100), np.uint8)
    col = 0
    for name, width in blocks:
        if name:
            m[rows[0]:rows[1], col:col + width] = I[name]
        col += width
    return m


def test_a_hood_next_to_the_back_door_is_the_trunk_and_one_next_to_the_front_door_stays():
    from carcheck.pipeline.part_ends import door_anchored_ends

    # a wreck's side view, nose to the left: hood | front door | back door | (quarter panel) | "hood" (the torn tailgate)
    m = _columns(("hood", 15), ("front_left_door", 25), ("back_left_door", 25), (None, 5), ("hood", 12),
                 ("front_bumper", 8))
    out = door_anchored_ends(m, NAMES)
    assert (out[20:80, :15] == I["hood"]).all()  # nearest door: the front door
    assert (out[20:80, 70:82] == I["trunk"]).all() and (out[20:80, 82:90] == I["back_bumper"]).all()
    assert (out == I["back_left_door"]).sum() == 25 * 60  # doors untouched
    assert (m[20:80, 70:82] == I["hood"]).all()  # the input is not modified


def test_a_rear_part_next_to_the_front_door_turns_front_only_where_back_doors_are_seen():
    from carcheck.pipeline.part_ends import door_anchored_ends

    m = _columns(("trunk", 15), ("front_left_door", 25), ("back_left_door", 25), (None, 5), ("tailgate", 12))
    out = door_anchored_ends(m, NAMES)
    assert (out[20:80, :15] == I["hood"]).all()  # the nose read as "trunk" beside the front door
    assert (out[20:80, 70:82] == I["tailgate"]).all()
    # a coupe (one door a side, labelled a front door) seen from the rear: no back door, nothing changes
    coupe = _columns(("front_left_door", 40), (None, 5), ("trunk", 20), ("back_left_light", 10))
    assert np.array_equal(door_anchored_ends(coupe, NAMES), coupe)
    # a back door below the share the rule needs does not vote
    sliver = _columns(("front_left_door", 40), ("back_left_door", 1), (None, 5), ("hood", 30))
    assert np.array_equal(door_anchored_ends(sliver, NAMES, min_door_share=0.05), sliver)
    assert (door_anchored_ends(sliver, NAMES, min_door_share=0.01) == I["trunk"]).sum() == 30 * 60
    assert np.array_equal(door_anchored_ends(np.ones((4, 4), np.uint8), ["background", "door"]), np.ones((4, 4)))


def test_the_panamera_crushed_rear_is_on_rear_parts():
    """The demo case's photo 06 (rear quarter of the crushed Panamera, left side): the part model reads the torn
    tailgate as hood / front bumper / headlamp; with the door-anchored ends no damage lands on a front part."""
    from carcheck.models.inference import DEFAULT_SEGMENTERS
    from conftest import data_path

    if not all(p.exists() for p in DEFAULT_SEGMENTERS):
        pytest.skip("shipped segmenter weights missing")
    from carcheck.pipeline.assess import Assessor
    from carcheck.schema import AssessConfig, FusionConfig

    photo = data_path("cases/salvage_panamera_167111/167111-06.png")
    front = {"hood", "front_bumper", "front_glass", "front_left_light", "front_right_light"}
    rear = {"trunk", "tailgate", "back_bumper", "back_glass", "back_left_light", "back_right_light"}

    def parts(**fusion):
        report, _ = Assessor(AssessConfig(gradcam=False, fusion=FusionConfig(**fusion)), heads={}).assess(
            [photo], case_id="ends")
        return {d.part for d in report.photos[0].detections}

    shipped, off = parts(), parts(door_end_min_share=None)
    assert front & off, off  # without the rule the crushed rear is read as the front
    assert not front & shipped and rear & shipped, shipped
