"""Damage x part plausibility: the declared table (complete, as the rules say) and its use in the
fusion (an implausible pair moved to the plausible part touching it, or flagged for review)."""

from __future__ import annotations

import numpy as np
import pytest

from carcheck.data.plausibility import PLAUSIBILITY, PlausibilityTable, get_plausibility
from carcheck.data.taxonomy import Taxonomy, TaxonomyError, get_mapping, get_taxonomy
from carcheck.pipeline.fusion import damaged_parts
from carcheck.schema import FusionConfig
from carcheck.pipeline.plausibility import apply_plausibility, neighbouring_parts, resolve_region

PARTS = list(get_taxonomy("dsmlr_parts").classes)


def test_the_table_covers_every_damage_class_of_cardd_and_damage_type_over_the_18_parts():
    for name in ("cardd_damage", "damage_type"):
        t = PLAUSIBILITY[name]
        assert t.parts.name == "dsmlr_parts" and len(t.parts.classes) == 18
        assert set(t.table) == set(get_taxonomy(name).classes), name
        for damage, parts in t.table.items():
            assert parts and parts <= set(PARTS), (name, damage)
    c = PLAUSIBILITY["cardd_damage"].table
    lights = {p for p in PARTS if p.endswith("_light")}
    assert c["tire_flat"] == {"wheel"} and c["lamp_broken"] == lights
    assert c["glass_shatter"] <= {"front_glass", "back_glass", "left_mirror", "right_mirror"} | {
        p for p in PARTS if p.endswith("_door")} and {"front_glass", "back_glass"} <= c["glass_shatter"]
    for d in ("dent", "scratch", "crack"):
        assert {"hood", "front_bumper", "back_bumper", "front_left_door", "trunk", "left_mirror"} <= c[d]
    assert "wheel" not in c["dent"] and not (lights & c["dent"]) and "front_glass" not in c["dent"]
    # damage_type follows from CarDD through the declared mapping: broken = crack | glass shatter | lamp broken
    dt = PLAUSIBILITY["damage_type"].table
    assert dt["broken"] == c["crack"] | c["glass_shatter"] | c["lamp_broken"] and dt["dent"] == c["dent"]
    assert get_plausibility("damage_type") is PLAUSIBILITY["damage_type"]
    assert get_plausibility("damage_type", "lplenka_parts") is None and get_plausibility("nope") is None


def test_an_incomplete_or_wrong_table_is_rejected():
    dmg = Taxonomy("d", ("dent", "tire_flat"), source="test")
    parts = get_taxonomy("dsmlr_parts")
    with pytest.raises(TaxonomyError, match=r"undeclared=\['tire_flat'\]"):
        PlausibilityTable(dmg, parts, {"dent": {"hood"}})
    with pytest.raises(TaxonomyError, match="unknown_parts=\\['roof'\\]"):
        PlausibilityTable(dmg, parts, {"dent": {"roof"}, "tire_flat": {"wheel"}})
    with pytest.raises(TaxonomyError, match="no_part=\\['dent'\\]"):
        PlausibilityTable(dmg, parts, {"dent": set(), "tire_flat": {"wheel"}})
    t = PlausibilityTable(dmg, parts, {"dent": {"hood"}, "tire_flat": {"wheel"}})
    assert t.plausible("tire_flat", "wheel") and not t.plausible("tire_flat", "hood")
    with pytest.raises(TaxonomyError):
        t.plausible("crack", "hood")
    with pytest.raises(TaxonomyError):
        PLAUSIBILITY["cardd_damage"].derived(get_mapping("lensor_damage", "damage_type"))


def _scene():
    """A door (left), a wheel (bottom right), a hood (top right); a flat-tyre region on the door
    touching the wheel, and a broken-lamp region on the hood touching no light."""
    part = np.zeros((60, 90), np.int64)
    part[:, :40] = PARTS.index("front_left_door") + 1
    part[30:, 40:] = PARTS.index("wheel") + 1
    part[:30, 40:] = PARTS.index("hood") + 1
    dmg = np.zeros((60, 90), np.int64)
    names = list(get_taxonomy("cardd_damage").classes)
    dmg[40:50, 30:40] = names.index("tire_flat") + 1  # on the door, 10 x 10 px, against the wheel at x = 40
    dmg[5:15, 60:70] = names.index("lamp_broken") + 1  # on the hood, no light anywhere
    dmg[40:50, 5:15] = names.index("dent") + 1  # on the door: plausible
    return part, dmg, names


def _probs(label, n):
    p = np.full((n, *label.shape), 0.01, np.float32)
    for c in range(n):
        p[c][label == c] = 0.95
    return p


def test_fusion_moves_an_implausible_pair_to_the_touching_plausible_part_or_flags_it():
    part, dmg, names = _scene()
    regions = damaged_parts(_probs(part, 19), _probs(dmg, 7), PARTS, names, FusionConfig(min_region_fraction=0))
    table = PLAUSIBILITY["cardd_damage"]
    out = {r.damage: r for r in apply_plausibility(regions, part, PARTS, table, "reassign", 3)}
    tyre = out["tire_flat"]
    assert tyre.part == "wheel" and tyre.reassigned_from == "front_left_door" and not tyre.review_reasons
    wheel_px = int((part == PARTS.index("wheel") + 1).sum())
    assert tyre.area == 100 and tyre.part_area == wheel_px + 100  # its pixels join the wheel
    lamp = out["lamp_broken"]
    assert lamp.part == "hood" and lamp.reassigned_from is None
    assert lamp.review_reasons == ["implausible: lamp_broken on hood (no plausible part touches the region)"]
    dent = out["dent"]
    assert dent.part == "front_left_door" and dent.reassigned_from is None and not dent.review_reasons
    # flag: nothing moves, both implausible pairs are flagged; off: nothing changes
    flagged = {r.damage: r for r in apply_plausibility(regions, part, PARTS, table, "flag", 3)}
    assert flagged["tire_flat"].part == "front_left_door" and flagged["tire_flat"].review_reasons
    assert flagged["lamp_broken"].review_reasons and not flagged["dent"].review_reasons
    off = apply_plausibility(regions, part, PARTS, table, "off", 3)
    assert [(r.part, r.review_reasons) for r in off] == [(r.part, r.review_reasons) for r in regions]
    assert apply_plausibility(regions, part, PARTS, None, "reassign", 3) == list(regions)  # no table: no rule


def test_only_parts_within_the_dilation_touch_a_region():
    part = np.zeros((20, 40), np.int64)
    part[:, 20:] = 2  # part 2 starts at x = 20
    mask = np.zeros((20, 40), bool)
    mask[5:10, 10:15] = True  # rows 5..9, columns 10..14: 6 px left of part b
    assert neighbouring_parts(mask, part, ["a", "b"], 5) == {}  # dilated to column 19
    assert neighbouring_parts(mask, part, ["a", "b"], 6) == {"b": 16}  # column 20, rows 0..15


def test_unassigned_damage_is_not_touched():
    from carcheck.pipeline.fusion import Region

    r = Region("unassigned", "tire_flat", 10, 100, 0.9, (0, 0, 2, 5), np.ones((4, 4), bool))
    assert resolve_region(r, np.zeros((4, 4), np.int64), PARTS, PLAUSIBILITY["cardd_damage"]) is r


def test_the_html_legend_follows_the_damage_taxonomy(tmp_path):
    """A CarDD 6-type model: the legend lists its six types with six distinct colours."""
    from carcheck.pipeline.build import build_report
    from carcheck.report.html import legend, write_report
    from carcheck.schema import AssessConfig

    rep = build_report(case_id="c", files=0, photos=[], findings=[], config=AssessConfig(), models={},
                       taxonomies={"parts": "dsmlr_parts", "damage": "cardd_damage"})
    lg = legend(rep, "damage")
    assert [n for n, _ in lg] == list(get_taxonomy("cardd_damage").classes)
    assert len({c for _, c in lg}) == 6
    html = write_report(rep, {}, tmp_path)["html"].read_text()
    for n in get_taxonomy("cardd_damage").classes:
        assert f"</i>{n}</span>" in html
    assert "</i>broken</span>" not in html
    with pytest.raises(ValueError, match="no 'damage' taxonomy"):
        legend(rep.model_copy(update={"taxonomies": {}}), "damage")
