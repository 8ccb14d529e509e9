"""The odometer reading in a dashboard photo's text (issue 30 item 2): OCR lines in,
:class:`~carcheck.schema.vehicle.OdometerReading` out. A pure rule module (no I/O).

Rules (a dashboard shows many numbers: the speedometer's and rev counter's scales, the clock, the date,
the outside temperature, the trip meter):

- **Candidates**: runs of digits in a line (a thousands separator ``,`` or a thin space between groups of
  3 is joined: ``123,456`` -> 123456). Left out: times (``17:40``), dates (``14.06.2022``), decimals (a trip
  meter ``397.4``), temperatures (a number followed by ``°`` / ``C``), the rev counter's ``x1000 r/min``, numbers glued to letters before them (an engine
  number ``CSZ051128``, a part code), and runs of fewer than
  :data:`MIN_DIGITS` digits unless an ``ODO`` / ``km`` / ``mi`` label is on the line or beside it.
- **Dial scales**: a run that splits into 2 or more numbers of a dial (multiples of 10, in steps of 10 or
  20, e.g. ``100120140`` read across a speedometer's arc) is a scale, not a reading.
- **Choice**: a candidate labelled by ``ODO`` (on its line or the line above / left of it) or by a unit
  (``km``, ``mi``, ``miles`` right of it on the same text row) beats an unlabelled one; then more
  digits (a used car's total has 5-6; the clock and trip have fewer); then the higher OCR score.
- **Unit**: ``km`` / ``mi`` when read beside the value; otherwise from the speedometer when it says
  ``km/h`` (km) or ``mph`` (mi) and not both; else ``unknown``.
- **Confidence**: the OCR score of the line, halved when no label (ODO / unit) was read beside the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..schema.vehicle import OdometerReading

__all__ = ["MIN_DIGITS", "OcrLine", "is_dial_scale", "find_odometer", "best_odometer"]

#: fewest digits of an unlabelled reading
MIN_DIGITS = 4
#: largest plausible total (km or mi)
MAX_VALUE = 1_999_999

_TIME = re.compile(r"\d{1,2}\s*:\s*\d{2}")
_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{2,4}")
_DECIMAL = re.compile(r"\d+[.,]\d(?!\d)")
_NUMBER = re.compile(r"\d{1,3}(?:[, ]\d{3})+(?!\d)|\d+")
_TEMP = re.compile(r"^\s*(°|º|℃|C\b|c\b|°C|ºC)")
_UNIT_KM = re.compile(r"(?<![a-z])km(?!\s*/\s*h)(?![a-z])", re.I)
_UNIT_MI = re.compile(r"(?<![a-z])(mi|miles)(?![a-z])", re.I)
_ODO = re.compile(r"(?<![a-z])(odo|0d0|od0|0do)(?![a-z])", re.I)
_ODO_GLUED = re.compile(r"(odo|0d0|od0|0do)", re.I)
_REV = re.compile(r"[x×X]\s*$")  # the rev counter's "x1000 r/min"
_PER_MIN = re.compile(r"^\s*(r\s*/|rpm|/\s*min)", re.I)
_KMH = re.compile(r"km\s*/?\s*h", re.I)
_MPH = re.compile(r"(?<![a-z])mph(?![a-z])", re.I)


@dataclass(frozen=True)
class OcrLine:
    """What the rules need of one OCR line: its text, score, and box ``(x0, y0, x1, y1)`` in pixels."""

    text: str
    score: float
    box: tuple[float, float, float, float]


def _as_line(x) -> OcrLine:
    if isinstance(x, OcrLine):
        return x
    pts = x.box
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return OcrLine(str(x.text), float(x.score), (min(xs), min(ys), max(xs), max(ys)))


def is_dial_scale(digits: str) -> bool:
    """Does a run of digits split into 2+ dial numbers (multiples of 10, 10..400, rising by a constant step
    of 10 or 20)? ``100120140`` -> True, ``120140`` -> True, ``193828`` -> False."""
    def split(s: str, prev: int | None, step: int | None) -> bool:
        if not s:
            return True
        for n in (2, 3):
            if len(s) < n or s[0] == "0":
                continue
            v = int(s[:n])
            if v % 10 or not 10 <= v <= 400:
                continue
            if prev is not None:
                d = v - prev
                if d not in (10, 20) or (step is not None and d != step):
                    continue
                if split(s[n:], v, d):
                    return True
            elif split(s[n:], v, None) and len(s) > n:
                return True
        return False

    return split(digits, None, None)


def _same_row(a: OcrLine, b: OcrLine) -> bool:
    ha, hb = a.box[3] - a.box[1], b.box[3] - b.box[1]
    overlap = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
    return overlap > 0.4 * min(ha, hb)


def _beside(value: OcrLine, other: OcrLine) -> bool:
    """``other`` is just right of ``value`` on its row (a unit), or just above / left of it (an ODO label)."""
    h = max(1.0, value.box[3] - value.box[1])
    if _same_row(value, other):
        return -3 * h <= other.box[0] - value.box[2] <= 2 * h or -3 * h <= value.box[0] - other.box[2] <= 2 * h
    above = -0.5 * h <= value.box[1] - other.box[3] <= 1.5 * h and other.box[1] < value.box[1]
    return above and other.box[0] <= value.box[2] and other.box[2] >= value.box[0] - 2 * h


def _candidates(line: OcrLine) -> list[tuple[int, int, str]]:
    """(value, digits, text after the number) of one line's numbers that may be a reading."""
    text = _DATE.sub(" ", _TIME.sub(" ", line.text))
    text = _DECIMAL.sub(" ", _ODO_GLUED.sub(" ", text))
    out = []
    for m in _NUMBER.finditer(text):
        digits = re.sub(r"[, ]", "", m.group(0))
        if m.start() > 0 and text[m.start() - 1].isalpha():  # glued to letters: an engine number, a code
            continue
        if _TEMP.match(text[m.end():]) or is_dial_scale(digits) or _REV.search(text[:m.start()]) \
                or _PER_MIN.match(text[m.end():]):
            continue
        v = int(digits)
        if v > MAX_VALUE:
            continue
        out.append((v, len(digits.lstrip("0")) or 1, text[m.end():]))
    return out


def find_odometer(lines: Iterable, photo: str | None = None) -> OdometerReading | None:
    """The odometer reading in one dashboard photo's OCR lines, or None.

    Args:
        lines: :class:`OcrLine` or :class:`carcheck.models.ocr.TextLine` (``text``, ``score``, 4-point ``box``).
        photo: the photo's name, stated in the reading.
    """
    ls = [_as_line(x) for x in lines]
    all_text = " ".join(line.text for line in ls)
    kmh, mph = bool(_KMH.search(all_text)), bool(_MPH.search(all_text))
    dial_unit = "km" if kmh and not mph else "mi" if mph and not kmh else "unknown"
    best = None
    for line in ls:
        for value, ndig, after in _candidates(line):
            unit = "km" if _UNIT_KM.match(after.strip()) or _UNIT_KM.search(after[:6]) else (
                "mi" if _UNIT_MI.search(after[:8]) else None)
            odo = bool(_ODO.search(line.text))
            for other in ls:
                if other is line or not _beside(line, other):
                    continue
                if unit is None and _same_row(line, other) and other.box[0] >= line.box[2] - 1:
                    t = other.text.strip()
                    unit = "km" if _UNIT_KM.match(t) else "mi" if _UNIT_MI.match(t) else None
                odo = odo or bool(_ODO.search(other.text))
            labelled = odo or unit is not None
            if ndig < MIN_DIGITS and not labelled:
                continue
            key = (labelled, ndig, line.score)
            if best is None or key > best[0]:
                best = (key, value, unit or dial_unit, line.score * (1.0 if labelled else 0.5))
    if best is None:
        return None
    _, value, unit, conf = best
    return OdometerReading(value=value, unit=unit, photo=photo, confidence=round(min(1.0, max(0.0, conf)), 4))


def best_odometer(readings: Sequence[OdometerReading]) -> OdometerReading | None:
    """One reading for the case: the most confident (None when there is none)."""
    return max(readings, key=lambda r: r.confidence, default=None)
