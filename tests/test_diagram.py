"""The car diagram: every part coloured by what the case found on it (report/diagram.py)."""

import json
from pathlib import Path

import pytest

from carcheck.report.diagram import PART_SHAPES, STATE_COLOURS, car_diagram_svg, part_states
from carcheck.schema import CaseReport

FIXTURE = Path(__file__).parent / "fixtures" / "review_report_panamera.json"


def test_states_follow_the_findings_and_the_visible_parts():
    report = CaseReport.model_validate(json.loads(FIXTURE.read_text()))
    states = part_states(report)
    assert set(states) == set(PART_SHAPES)
    for part, state in states.items():
        on = [f for f in report.findings if f.part == part]
        seen = any(part in (p.visible_parts or []) for p in report.photos if p.status == "assessed")
        expected = ("damaged" if any(not f.needs_review for f in on) else "review" if on
                    else "clean" if seen else "not_seen")
        assert state == expected, part
    # a confident finding makes its part damaged; removing every finding leaves seen parts clean
    f = next(f for f in report.findings if f.part in PART_SHAPES)
    f.needs_review = False
    assert part_states(report)[f.part] == "damaged"
    report.findings = []
    assert set(part_states(report).values()) <= {"clean", "not_seen"}


def test_svg_draws_every_part_in_its_state_colour():
    states = {p: "clean" for p in PART_SHAPES}
    states["hood"], states["wheel"] = "damaged", "review"
    svg = car_diagram_svg(states, title="<script>x</script>")
    assert svg.count("<rect data-part=") == sum(len(r) for r in PART_SHAPES.values())  # 4 wheels
    assert f'data-part="hood" data-state="damaged" x="50" y="42" width="100" height="68" fill="{STATE_COLOURS["damaged"]}"' in svg
    assert svg.count('data-part="wheel" data-state="review"') == 4
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'data-part="trunk" data-state="not_seen"' in car_diagram_svg({})
    with pytest.raises(ValueError, match="unknown part state"):
        car_diagram_svg({"hood": "broken"})
