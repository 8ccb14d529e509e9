"""Issue 26: P(part damaged) decides review (C_base, K_agree, C_refined kept as the paper defines them), a grade per
damaged part, and the case benchmark's scores."""

from __future__ import annotations

import math

import pytest

from carcheck.evaluate.cases import reliability, score_case, sum_scores
from carcheck.pipeline.agreement import PhotoFindings, reconcile, reconcile_parts
from carcheck.pipeline.confidence import FEATURES, PartConfidence, PhotoEvidence, load_part_confidence, part_features
from carcheck.pipeline.review import part_review
from carcheck.pipeline.severity import part_grade


def _model(threshold=0.5, coef=None):
    n = len(FEATURES)
    return PartConfidence(features=FEATURES, mean=(0.0,) * n, scale=(1.0,) * n,
                          coef=tuple(coef or [0.0] * n), intercept=0.0, threshold=threshold, target_precision=0.9)


def test_calibrated_probability_decides_review_not_c_refined():
    # low C_refined and a single-photo sighting, but P above the threshold: confident
    needs, reasons = part_review(0.2, 1, 3, 0.5, ["a.jpg"], ["b.jpg"], p_damaged=0.8, p_threshold=0.6)
    assert needs is False
    assert any("damage seen in 1 of 3 views" in r for r in reasons)
    needs, reasons = part_review(0.9, 3, 3, 0.5, ["a.jpg", "b.jpg"], [], p_damaged=0.4, p_threshold=0.6)
    assert needs is True and reasons[0].startswith("P(damaged) 0.40 < 0.60 (C_refined 0.90)")
    # without a model: the paper's rule
    assert part_review(0.2, 1, 3, 0.5, ["a.jpg"], [])[0] is True
    assert part_review(0.6, 1, 1, 0.5, ["a.jpg"], [])[0] is False


def test_probability_is_the_logistic_of_standardised_features_and_round_trips(tmp_path):
    m = PartConfidence(features=("c_base", "p_filter"), mean=(0.5, 0.5), scale=(0.25, 0.5), coef=(2.0, 1.0),
                       intercept=-1.0, threshold=0.7, target_precision=0.9, source="test")
    z = -1.0 + 2.0 * (0.75 - 0.5) / 0.25 + 1.0 * (1.0 - 0.5) / 0.5
    assert m.probability({"c_base": 0.75, "p_filter": 1.0}) == pytest.approx(1 / (1 + math.exp(-z)))
    f = tmp_path / "m.json"
    f.write_text(m.to_json())
    assert load_part_confidence(f) == m
    f.write_text('{"features": ["nope"], "mean": [0], "scale": [1], "coef": [1], "intercept": 0, "threshold": 0.5, '
                 '"target_precision": 0.9}')
    with pytest.raises(ValueError, match="not a part-confidence model"):
        load_part_confidence(f)


def test_reconcile_parts_states_p_features_grade_and_reviews_on_p():
    photos = [PhotoFindings("a.jpg", {"back_bumper", "trunk"}, {("back_bumper", "dent"): (0.8, 0.3, "large")}),
              PhotoFindings("b.jpg", {"back_bumper", "hood"}, {})]
    ev = {"a.jpg": PhotoEvidence(p_damaged=0.99, exterior_certain=True, severity="severe", severity_probability=0.7)}
    findings = reconcile(photos)
    # weights only on p_filter: P = sigmoid(0.99 * 4) ~ 0.98
    coef = [4.0 if f == "p_filter" else 0.0 for f in FEATURES]
    (part,) = reconcile_parts(photos, findings, evidence=ev, confidence=_model(0.9, coef))
    assert part.k_agree == 0.5 and part.c_refined == pytest.approx(0.4)  # the paper's numbers are kept
    assert part.features == {k: round(v, 4) for k, v in part_features(0.8, 0.5, 1, 0.3, [ev["a.jpg"]]).items()}
    assert part.p_damaged == pytest.approx(1 / (1 + math.exp(-3.96)), abs=1e-4)
    assert part.needs_review is False  # P 0.98 >= 0.9 although C_refined 0.4 < 0.5
    assert part.grade == "severe" and "severity head" in part.grade_reason
    (part,) = reconcile_parts(photos, findings, evidence=ev, confidence=_model(0.99, coef))
    assert part.needs_review is True
    (part,) = reconcile_parts(photos, findings)  # no model: no P, the paper's rule
    assert part.p_damaged is None and part.needs_review is True


def test_grades():
    ev = [PhotoEvidence()]
    assert part_grade(["dent"], 0.4, ev)[0] == "severe"
    assert part_grade(["scratch"], 0.4, ev)[0] == "moderate"  # large, but a scratch is not a crushed panel
    assert part_grade(["lamp_broken"], 0.02, ev) == ("moderate", "lamp broken: the part is usually replaced")
    assert part_grade(["scratch"], 0.02, ev)[0] == "minor"
    assert part_grade(["scratch"], 0.02, [PhotoEvidence(severity="moderate", severity_probability=0.8)])[0] == "moderate"
    assert part_grade(["scratch"], 0.02, [PhotoEvidence(severity="severe", severity_probability=0.4)])[0] == "minor"


def _report(parts, photos=(), findings=(), different=()):
    return {"parts": [{"part": p, "needs_review": r} for p, r in parts],
            "photos": [{"path": f"/x/{n}", "detections": d} for n, d in photos],
            "findings": [{"photos": [f"/x/{n}" for n in ns]} for ns in findings],
            "consistency": {"different_vehicle": [f"/x/{n}" for n in different]}}


def test_case_scores():
    exp = {"case": "c", "damaged_part_groups": [["tailgate", "trunk"], ["back_bumper"]], "clean_parts": ["hood", "front_bumper"],
           "not_exterior_photos": {"i.jpg": "interior"}, "other_vehicle_photos": ["odd.jpg"]}
    rep = _report([("trunk", False), ("back_bumper", True), ("hood", False), ("wheel", False)],
                  photos=[("a.jpg", [{}]), ("i.jpg", []), ("odd.jpg", []), ("b.jpg", [])], findings=[["i.jpg"]],
                  different=["b.jpg"])
    s = score_case(rep, exp)
    assert (s["groups"], s["groups_confident"], s["groups_any"]) == (2, 1, 2)
    assert (s["confident_parts"], s["confident_outside_groups"]) == (3, 2)  # hood (clean) and wheel (unjudged)
    assert (s["clean_parts"], s["clean_reported_confident"], s["clean_reported_any"]) == (2, 1, 1)
    assert (s["non_exterior_photos"], s["non_exterior_searched"]) == (1, 1)
    assert (s["odd_photos"], s["odd_flagged"], s["false_flags"]) == (1, 0, 1)
    s2 = score_case(rep, exp, confident={"back_bumper"})
    assert (s2["groups_confident"], s2["confident_outside_groups"]) == (1, 0)
    tot = sum_scores([s, score_case(_report([]), {**exp, "damaged_part_groups": [], "other_vehicle_photos": []})])
    assert tot["recall_confident"] == 0.5 and tot["undamaged_cases"] == 1 and tot["undamaged_cases_with_confident"] == 0


def test_expected_calibration_error():
    r = reliability([0.95, 0.95, 0.05, 0.05], [1, 0, 0, 0], bins=10)
    assert r["ece"] == pytest.approx(0.5 * abs(0.5 - 0.95) + 0.5 * abs(0.0 - 0.05))
    assert [b["n"] for b in r["bins"] if b["n"]] == [2, 2]
    with pytest.raises(ValueError):
        reliability([0.5], [1, 0])


def test_damage_on_background_goes_to_the_most_probable_part_when_asked():
    import numpy as np

    from carcheck.pipeline.fusion import damaged_parts
    from carcheck.schema import FusionConfig

    part_prob = np.zeros((3, 10, 10), np.float32)
    part_prob[0], part_prob[1], part_prob[2] = 0.7, 0.2, 0.1  # background wins everywhere; "a" is next
    dmg = np.zeros((2, 10, 10), np.float32)
    dmg[0] = 1.0
    dmg[0, 2:6, 2:6], dmg[1, 2:6, 2:6] = 0.1, 0.9
    assert [r.part for r in damaged_parts(part_prob, dmg, ["a", "b"], ["dent"], FusionConfig())] == ["unassigned"]
    got = damaged_parts(part_prob, dmg, ["a", "b"], ["dent"], FusionConfig(unassigned_min_part_probability=0.15))
    assert [(r.part, r.area) for r in got] == [("a", 16)]
    got = damaged_parts(part_prob, dmg, ["a", "b"], ["dent"], FusionConfig(unassigned_min_part_probability=0.25))
    assert [r.part for r in got] == ["unassigned"]
