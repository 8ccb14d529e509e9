"""A car diagram (top view, SVG) with every DSMLR part coloured by what the case found on it.

States, decided by :func:`part_states` from a :class:`~carcheck.schema.CaseReport`:
``damaged`` (a finding on the part that needs no review), ``review`` (findings on it, all of them
for review), ``clean`` (visible in an assessed photo, no finding) and ``not_seen`` (in no assessed
photo's visible parts). The diagram is carcheck's own schematic (front at the top; the car's left on
the left, as seen from the driver's seat), not a drawing of the particular vehicle.
"""

from __future__ import annotations

from html import escape
from typing import Mapping

from ..schema import CaseReport

__all__ = ["STATES", "STATE_COLOURS", "PART_SHAPES", "part_states", "car_diagram_svg"]

STATES = ("damaged", "review", "clean", "not_seen")
STATE_COLOURS = {"damaged": "#d62728", "review": "#ff9f1a", "clean": "#2ca02c", "not_seen": "#c7c7c7"}

#: part -> rectangles ``(x, y, width, height)`` in the 200 x 400 viewBox (the wheel has four).
PART_SHAPES: Mapping[str, tuple[tuple[int, int, int, int], ...]] = {
    "front_bumper": ((40, 10, 120, 20),),
    "front_left_light": ((40, 30, 30, 12),),
    "front_right_light": ((130, 30, 30, 12),),
    "hood": ((50, 42, 100, 68),),
    "front_glass": ((55, 110, 90, 30),),
    "left_mirror": ((5, 115, 20, 15),),
    "right_mirror": ((175, 115, 20, 15),),
    "front_left_door": ((25, 120, 25, 80),),
    "back_left_door": ((25, 200, 25, 80),),
    "front_right_door": ((150, 120, 25, 80),),
    "back_right_door": ((150, 200, 25, 80),),
    "back_glass": ((55, 250, 90, 30),),
    "trunk": ((50, 280, 100, 50),),
    "tailgate": ((50, 330, 100, 20),),
    "back_left_light": ((40, 350, 30, 12),),
    "back_right_light": ((130, 350, 30, 12),),
    "back_bumper": ((40, 362, 120, 23),),
    "wheel": ((22, 55, 16, 45), (162, 55, 16, 45), (22, 290, 16, 45), (162, 290, 16, 45)),
}


def part_states(report: CaseReport) -> dict[str, str]:
    """Part -> state (module docstring) for every part of :data:`PART_SHAPES`.

    ``unassigned`` findings (damage off any part) have no place on the diagram; they stay in the report's
    findings list.
    """
    seen = {p for ph in report.photos if ph.status == "assessed" for p in (ph.visible_parts or [])}
    states = {}
    # schema >= 1.8: the per-part findings decide (a part is damaged when its part-level finding is
    # confident); older reports: any confident (part, damage) finding
    on = report.parts if report.parts else report.findings
    for part in PART_SHAPES:
        on_part = [f for f in on if f.part == part]
        if any(not f.needs_review for f in on_part):
            states[part] = "damaged"
        elif on_part:
            states[part] = "review"
        elif part in seen:
            states[part] = "clean"
        else:
            states[part] = "not_seen"
    return states


def car_diagram_svg(states: Mapping[str, str], title: str = "parts of the car") -> str:
    """The top-view diagram as an inline SVG string (every label escaped).

    Args:
        states: part -> one of :data:`STATES` (parts absent are drawn ``not_seen``).
        title: the SVG's accessible title.
    Raises:
        ValueError: a state that is not one of :data:`STATES`.
    """
    bad = {p: s for p, s in states.items() if s not in STATES}
    if bad:
        raise ValueError(f"unknown part state(s) {bad}; states are {STATES}")
    out = [f'<svg class="car-diagram" viewBox="0 0 200 400" width="160" height="320" role="img" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
           '<rect x="55" y="140" width="90" height="110" fill="#eeeeee" stroke="#999"/>']  # the roof: not a part
    for part, rects in PART_SHAPES.items():
        state = states.get(part, "not_seen")
        label = escape(f"{part.replace('_', ' ')}: {state.replace('_', ' ')}")
        for x, y, w, h in rects:
            out.append(f'<rect data-part="{escape(part)}" data-state="{state}" x="{x}" y="{y}" width="{w}" height="{h}" '
                       f'fill="{STATE_COLOURS[state]}" stroke="#333" stroke-width="1"><title>{label}</title></rect>')
    out.append("</svg>")
    return "".join(out)
