"""Licence-plate text on exterior photos, used to compare the photos of one case (issue 30 item 2).

Where: the privacy head (:mod:`carcheck.models.privacy`) already finds the plates of every photo on the
assessment's own backbone pass; this module crops each plate region large enough to be legible
(:data:`MIN_PLATE_WIDTH_PX` wide in the stored photo), at most :data:`MAX_PLATES` per photo, from the
full-resolution photo and reads it with the OCR's plate reader (:func:`carcheck.models.ocr.read_plate`: PP-OCRv4
detection at a small size, then recognition; a median 33 ms per plate region on 2 threads of this project's
Intel Xeon, bench/accuracy/plates.py). Only exterior photos are read.

What counts as a plate read (:func:`plate_text`): a text line of 5-8 letters and digits once separators
(space, ``-``, ``.``, ``·``) are removed, with at least one letter and one digit, recognised with score
>= :data:`MIN_SCORE`. Dealer plate covers ("GOLD COAST CAR YARD"), state names and phone numbers are not.

How a case uses them (:func:`plate_decisions`): the case's plate is the text most photos read (after
folding the characters OCR confuses on plates: O/Q -> 0, I -> 1; a read one character away counts for it),
when at least two photos read it. A
photo whose read is that plate (at most one character apart) *agrees*; a photo whose read is at least
:data:`MISMATCH_DISTANCE` edits from it *disagrees*: its car carries another plate. Everything else
decides nothing. :func:`apply_plate_evidence` lets that override the appearance check: a photo showing
the case's plate is the same vehicle, one showing another plate is flagged.

Plate text is personal data: the report keeps only the masked form (:func:`mask_plate`, all but the last
three characters replaced by ``•``) and whether the photo agrees; the full text lives in memory for the
comparison and is never written.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["PlateRead", "MIN_PLATE_WIDTH_PX", "MAX_PLATES", "MIN_SCORE", "MISMATCH_DISTANCE", "plate_text",
           "fold", "mask_plate", "edit_distance", "read_plates", "plate_decisions", "apply_plate_evidence"]

#: narrowest plate region (grown box, pixels of the stored photo) worth reading
MIN_PLATE_WIDTH_PX = 60
#: most plate regions read per photo (the largest first)
MAX_PLATES = 2
#: lowest recogniser score (mean character probability) of a plate read
MIN_SCORE = 0.8
#: edits between a photo's read and the case's plate from which the photo shows another plate
MISMATCH_DISTANCE = 2

_SEPARATORS = re.compile(r"[\s\-\.·•_:]+")
_FOLD = str.maketrans({"O": "0", "Q": "0", "I": "1"})


@dataclass(frozen=True)
class PlateRead:
    """One plate read in a photo.

    Attributes:
        text: the plate's letters and digits, upper case, separators removed (personal data: never written).
        score: the recogniser's score of the line (fraction).
        width_px: the plate region's width in pixels of the stored photo.
    """

    text: str
    score: float
    width_px: int

    @property
    def masked(self) -> str:
        """The text as a report may show it (:func:`mask_plate`)."""
        return mask_plate(self.text)


def plate_text(lines: Sequence[tuple[str, float]], min_score: float = MIN_SCORE) -> tuple[str, float] | None:
    """The registration among the text lines read in one plate region (see the module doc), or None.

    Args:
        lines: ``(text, score)`` per line, as the recogniser gives them.
        min_score: lines scored below it are ignored.
    Returns:
        ``(text, score)`` of the best-scored line that looks like a registration (upper case, separators
        removed), or None.
    """
    best = None
    for text, score in lines:
        t = _SEPARATORS.sub("", str(text).upper())
        if (float(score) >= min_score and 5 <= len(t) <= 8 and t.isascii() and t.isalnum()
                and any(c.isdigit() for c in t) and any(c.isalpha() for c in t)):
            if best is None or score > best[1]:
                best = (t, float(score))
    return best


def fold(text: str) -> str:
    """``text`` with the characters OCR confuses on plates folded together (O, Q -> 0; I -> 1)."""
    return text.upper().translate(_FOLD)


def mask_plate(text: str, keep: int = 3) -> str:
    """``text`` with all but its last ``keep`` characters replaced by ``•`` (e.g. ``622WHV`` -> ``•••WHV``)."""
    return "•" * max(len(text) - keep, 0) + text[-keep:] if text else ""


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two strings."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def read_plates(image: np.ndarray, regions: Sequence, scale: float, reader: Callable | None = None,
                min_width: int = MIN_PLATE_WIDTH_PX, max_plates: int = MAX_PLATES) -> PlateRead | None:
    """Read the plate of one exterior photo.

    Args:
        image: the stored photo, RGB uint8 ``(H, W, 3)``.
        regions: the privacy head's regions (``kind``, ``bbox_xywh`` in px of the network input, ``score``).
        scale: stored-photo pixels per network-input pixel (``W / w_input``).
        reader: ``crop -> [(text, score)]`` (default :func:`carcheck.models.ocr.read_plate`).
        min_width: narrowest region read, px of the stored photo.
        max_plates: most regions read (the widest first).
    Returns:
        The :class:`PlateRead` of the widest region that reads as a registration (the next region is read only
        when the wider one does not: a dealer's plate cover or sign), or None (no legible plate).
    """
    if reader is None:
        from ..models.ocr import read_plate as reader
    h, w = image.shape[:2]
    boxes = []
    for r in regions or ():
        if r.kind != "plate":
            continue
        x, y, bw, bh = (int(round(v * scale)) for v in r.bbox_xywh)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
        if x1 - x0 >= min_width and y1 - y0 >= 8:
            boxes.append((x0, y0, x1, y1))
    for x0, y0, x1, y1 in sorted(boxes, key=lambda b: b[0] - b[2])[:max_plates]:
        found = plate_text(reader(np.ascontiguousarray(image[y0:y1, x0:x1])))
        if found is not None:  # the widest legible region: the car's own plate rather than one parked behind
            return PlateRead(found[0], found[1], x1 - x0)
    return None


def plate_decisions(reads: Mapping[str, PlateRead | None]) -> tuple[str | None, dict[str, bool]]:
    """The case's plate and, per photo that read a plate, whether it shows it (see the module doc).

    Args:
        reads: photo name -> its plate read (None: none read).
    Returns:
        ``(case plate or None, {photo: True (agrees) / False (another plate)})``: the case plate is the text most
        photos read (compared folded, returned as most often read); photos whose read decides nothing are absent.
    """
    folded = {k: fold(r.text) for k, r in reads.items() if r is not None}
    if not folded:
        return None, {}
    exact = Counter(folded.values())
    # a read's support: the reads at most one character from it (one misread character is the same plate)
    support = {t: sum(edit_distance(t, f) <= 1 for f in folded.values()) for t in exact}
    best = max(support.values())
    tops = [t for t, n in support.items() if n == best]
    if best < 2 or any(edit_distance(a, b) > 1 for a in tops for b in tops):
        return None, {}  # no plate read twice, or two plates read equally often: nothing to compare against
    plate = max(tops, key=lambda t: exact[t])
    raw = Counter(r.text for k, r in reads.items() if r is not None and folded[k] == plate).most_common(1)[0][0]
    out = {}
    for name, t in folded.items():
        d = edit_distance(t, plate)
        if d == 0 or d == 1:
            out[name] = True
        elif d >= MISMATCH_DISTANCE:
            out[name] = False
    return raw, out


def apply_plate_evidence(result, decisions: Mapping[str, bool], masked_plate: str) -> None:
    """Let plate agreement decide the same-vehicle check of the photos it speaks for (in place).

    Args:
        result: the appearance check's :class:`~.identity.SameVehicle` (``matches``, ``consistency``).
        decisions: photo -> True (shows the case's plate: same vehicle) / False (another plate: flagged),
            from :func:`plate_decisions`.
        masked_plate: the case's plate as the report may show it.
    """
    if not decisions:
        return
    flagged = list(result.consistency.different_vehicle)
    for name, agrees in decisions.items():
        m = result.matches.get(name)
        if m is not None:
            m.same_vehicle = agrees
            m.plate_agrees = agrees
        if agrees and name in flagged:
            flagged.remove(name)
        elif not agrees and name not in flagged:
            flagged.append(name)
    result.consistency.different_vehicle = flagged
    n_yes, n_no = sum(decisions.values()), sum(not v for v in decisions.values())
    result.consistency.note += (f"; plate {masked_plate} read on {n_yes} photo(s)"
                                + (f", another plate on {n_no}" if n_no else "") + " (plate text decides those)")
