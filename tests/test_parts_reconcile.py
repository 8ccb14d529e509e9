"""Findings per physical part (issue 16, item 3): K_agree over views, close-ups joined to their full
view, a part seen clean in full views and damaged in one photo only goes to review."""

import pytest

from carcheck.pipeline import review
from carcheck.pipeline.agreement import PhotoFindings, reconcile, reconcile_parts, view_groups

FRONT = {"front_bumper", "hood", "front_glass", "front_left_light", "front_right_light"}
REAR = {"back_bumper", "trunk", "back_glass", "back_left_light", "back_right_light"}


def _parts(photos, thr=0.5):
    return {p.part: p for p in reconcile_parts(photos, reconcile(photos, thr), thr)}


def test_types_that_disagree_between_views_still_agree_that_the_part_is_damaged():
    """Three views of the rear: 'dent' in two, 'crack' in the third. Per (part, type) neither type
    reaches K_agree 1; per part the bumper is damaged in 3 of 3 views."""
    a = PhotoFindings("a.jpg", REAR, {("back_bumper", "dent"): (0.8, 0.2, "medium")})
    b = PhotoFindings("b.jpg", REAR | {"wheel"}, {("back_bumper", "dent"): (0.7, 0.2, "medium")})
    c = PhotoFindings("c.jpg", REAR | {"back_left_door"}, {("back_bumper", "crack"): (0.9, 0.1, "small")})
    pairs = {(f.part, f.damage): f for f in reconcile([a, b, c], 0.5)}
    assert pairs[("back_bumper", "dent")].k_agree == pytest.approx(2 / 3)
    assert pairs[("back_bumper", "crack")].needs_review  # 0.9 * 1/3 < 0.5
    bumper = _parts([a, b, c])["back_bumper"]
    assert (bumper.views_damaged, bumper.views_visible) == (3, 3) and bumper.k_agree == 1.0
    assert bumper.c_base == pytest.approx(0.9) and bumper.c_refined == pytest.approx(0.9)
    assert not bumper.needs_review and bumper.review_reasons == []
    assert bumper.damages == ["dent", "crack"]  # dent: C_refined 0.8 * 2/3 = 0.53 > crack 0.3
    assert sorted(bumper.photos) == ["a.jpg", "b.jpg", "c.jpg"]


def test_a_closeup_joins_its_full_view_and_is_not_outvoted_by_it():
    """A scratch only the close-up resolves: the close-up and the full view it belongs to are one view,
    so the part is damaged in 1 of 1 views, not in 1 of 2 photos."""
    full = PhotoFindings("full.jpg", FRONT | {"front_left_door", "wheel"}, {})
    close = PhotoFindings("close.jpg", {"hood", "front_glass"}, {("hood", "scratch"): (0.8, 0.05, "small")},
                          closeup=True)
    groups = view_groups([full, close])
    assert groups["full.jpg"] == groups["close.jpg"]
    hood = _parts([full, close])["hood"]
    assert (hood.views_damaged, hood.views_visible) == (1, 1) and not hood.needs_review
    # the same two photos without the close-up relation (both full views): 1 of 2, and the full view saw it clean
    as_full = PhotoFindings("close.jpg", {"hood", "front_glass"}, {("hood", "scratch"): (0.8, 0.05, "small")})
    hood2 = _parts([full, as_full])["hood"]
    assert (hood2.views_damaged, hood2.views_visible) == (1, 2) and hood2.needs_review


def test_views_do_not_chain_through_a_closeup():
    """A close-up of the hood is a strict subset of both a front and a side view: it joins the tighter
    one only, and the two full views stay two views."""
    front = PhotoFindings("front.jpg", FRONT, {})
    side = PhotoFindings("side.jpg", FRONT | {"front_left_door", "back_left_door", "wheel", "left_mirror"}, {})
    close = PhotoFindings("close.jpg", {"hood"}, {}, closeup=True)
    same = PhotoFindings("front2.jpg", FRONT, {})
    g = view_groups([front, side, close, same])
    assert g["close.jpg"] == g["front.jpg"] == g["front2.jpg"] != g["side.jpg"]


def test_damaged_in_one_photo_only_while_full_views_show_it_clean_goes_to_review():
    """A confident-looking hood dent (C_base 0.99) in one photo, with the hood seen clean in one other full
    view: C_refined 0.495 < 0.5 already; with a low threshold it is still review, by the single-photo rule."""
    a = PhotoFindings("a.jpg", FRONT, {("hood", "dent"): (0.99, 0.1, "medium")})
    b = PhotoFindings("b.jpg", FRONT | {"front_left_door"}, {})
    hood = _parts([a, b], thr=0.2)["hood"]
    assert hood.c_refined == pytest.approx(0.495) and hood.needs_review
    assert hood.review_reasons == ["damage seen in 1 of 2 views of the part",
                                   "damaged in one photo only (a.jpg); seen clean in 1 full view(s): b.jpg"]
    # the hood seen by that photo alone is confident
    alone = _parts([a], thr=0.2)["hood"]
    assert not alone.needs_review and alone.review_reasons == []


def test_implausible_regions_do_not_make_a_part_damaged():
    """A lamp_broken region on the hood (implausible, flagged) beside a plausible dent: the part's
    evidence is the dent only; a part with implausible regions only goes to review with their reason."""
    reason = review.implausible_reason("hood", "lamp_broken")
    a = PhotoFindings("a.jpg", FRONT, {("hood", "dent"): (0.6, 0.1, "medium"), ("hood", "lamp_broken"): (0.95, 0.1, "small"),
                                       ("front_glass", "lamp_broken"): (0.9, 0.1, "small")},
                      {("hood", "lamp_broken"): [reason],
                       ("front_glass", "lamp_broken"): [review.implausible_reason("front_glass", "lamp_broken")]})
    parts = _parts([a])
    assert parts["hood"].damages == ["dent"] and parts["hood"].c_base == pytest.approx(0.6)
    assert not parts["hood"].needs_review
    glass = parts["front_glass"]
    assert glass.needs_review and glass.review_reasons == [review.implausible_reason("front_glass", "lamp_broken")]


def test_unassigned_damage_has_no_part_entry():
    a = PhotoFindings("a.jpg", FRONT, {("unassigned", "scratch"): (0.9, 0.01, "small")})
    assert reconcile_parts([a], reconcile([a], 0.5), 0.5) == []


def test_the_verdict_states_the_parts():
    from carcheck.pipeline.build import summarize
    from carcheck.schema import Finding, PartFinding, PhotoReport

    f = [Finding(part="hood", damage="dent", size_class="small", area_fraction_of_part=0.1, c_base=0.9, k_agree=1,
                 c_refined=0.9, needs_review=False, photos=["a.jpg"]),
         Finding(part="hood", damage="scratch", size_class="small", area_fraction_of_part=0.1, c_base=0.4, k_agree=1,
                 c_refined=0.4, needs_review=True, photos=["a.jpg"])]
    p = [PartFinding(part="hood", damages=["dent", "scratch"], c_base=0.9, k_agree=1, c_refined=0.9, views_damaged=1,
                     views_visible=1, photos=["a.jpg"], needs_review=False)]
    photos = [PhotoReport(path="a.jpg", status="assessed")]
    assert summarize(1, photos, f, None, p).verdict == ("Damage on 1 part(s) with confidence; 0 part(s) need human review "
                                                   "(2 part/type finding(s)).")
    assert summarize(1, photos, f).verdict == "2 finding(s) on 1 part(s); 1 need human review."
