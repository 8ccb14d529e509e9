"""The VIN in a photo's text (issue 30 item 2): OCR lines in, :class:`~carcheck.schema.VinReading` out.

A pure rule module (text in, decision out; the only file it reads is its own declared WMI table,
``wmi.yaml`` beside it, with its source stated there).

Rules:

- **Alphabet** (ISO 3779): 17 characters of ``0-9`` and ``A-Z`` without ``I``, ``O``, ``Q``. A VIN
  can never hold those three letters, so the usual OCR confusions are fixed only there: ``O`` -> ``0``,
  ``Q`` -> ``0``, ``I`` -> ``1``; no other letter is changed (``S``, ``B``, ``Z``, ``G`` are valid
  VIN letters and stay what was read).
- **Candidates**: each line's runs of letters and digits (a leading ``VIN`` / ``VIN NO`` label is
  dropped), and the line's runs joined (plates printed in groups). A run of 17 or more valid
  characters gives every 17-character window (the one whose check digit holds is preferred); a shorter
  run is a complete VIN when its last 4 characters are digits (ISO 3779: the VIS ends in 4 numeric
  characters); a shorter run is a **partial** read (``complete`` False) only when it starts with a WMI of the table and holds
  at least :data:`MIN_PARTIAL` characters: an unanchored run of 8-16 characters (an engine number, a
  date, a model code) is not called a VIN.
- **Check digit** (position 9; 49 CFR 565.15, North America): transliterate letters (A-H 1-8, J-N 1-5,
  P 7, R 9, S-Z 2-9), weight positions 8 7 6 5 4 3 2 10 0 9 8 7 6 5 4 3 2, sum mod 11 (10 written
  ``X``). ``check_digit_valid`` is True / False for a complete VIN whose WMI is North American (first
  character 1-5); for any other complete VIN it is True when the digit holds (a VIN built to the North
  American rule, e.g. a US-market import) and None otherwise (the rule does not apply there); None for a
  partial read.
- **WMI** (first 3 characters, ISO 3780): the manufacturer from ``wmi.yaml`` (3-character entries
  first, then 2-character prefixes such as ``JT`` Toyota); None when it is not listed.
- **Agreement with make/model**: :func:`agrees_with_make` compares the WMI's makes with the make/model
  head's top make (None when either is unknown).
- **Choice** (within a photo and over photos, :func:`best_vin`): a holding check digit first, then a known
  WMI (a "complete" read of an unknown WMI whose digit does not hold may be any 17 characters; a partial
  read anchored on a known WMI says more), then complete before partial, a check digit not failing, more
  characters, the higher OCR score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from ..schema.vehicle import VinReading

__all__ = ["VIN_CHARS", "MIN_PARTIAL", "WmiEntry", "load_wmi_table", "normalize_vin_chars", "check_digit",
           "check_digit_valid", "decode_wmi", "find_vin", "best_vin", "agrees_with_make"]

#: the ISO 3779 alphabet: digits and capitals without I, O, Q
VIN_CHARS = frozenset("0123456789ABCDEFGHJKLMNPRSTUVWXYZ")
#: fewest characters of a partial read (anchored on a known WMI)
MIN_PARTIAL = 6
#: OCR confusions fixed: only letters a VIN can never hold
_CONFUSIONS = str.maketrans({"O": "0", "Q": "0", "I": "1"})
_TRANSLIT = {**{str(d): d for d in range(10)},
             **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))), "P": 7, "R": 9,
             **dict(zip("STUVWXYZ", range(2, 10)))}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_LABEL = re.compile(r"^(VIN(NO|NUMBER|CODE)?|CHASSIS(NO)?|FRAME(NO)?)")
DEFAULT_WMI_TABLE = Path(__file__).with_name("wmi.yaml")


@dataclass(frozen=True)
class WmiEntry:
    """One row of the WMI table: who the code belongs to and which makes it is used for."""

    manufacturer: str
    makes: tuple[str, ...]
    country: str


def load_wmi_table(path: str | Path | None = None) -> dict[str, WmiEntry]:
    """The WMI table (format: ``wmi.yaml``): ``{wmi or 2-character prefix: WmiEntry}``.

    Raises:
        ValueError: a key not of 2-3 VIN characters, or a row not ``[manufacturer, [makes], country]``.
    """
    return _load(str(Path(path or DEFAULT_WMI_TABLE).resolve()))


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, WmiEntry]:
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping wmi -> [manufacturer, [makes], country]")
    out = {}
    for key, row in raw.items():
        k = str(key)
        if not (2 <= len(k) <= 3 and set(k) <= VIN_CHARS):
            raise ValueError(f"{path}: WMI {k!r} is not 2-3 VIN characters")
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[1], list) and row[1]):
            raise ValueError(f"{path}: row {k!r} must be [manufacturer, [makes], country], got {row!r}")
        out[k] = WmiEntry(str(row[0]), tuple(str(m) for m in row[1]), str(row[2]))
    return out


def normalize_vin_chars(text: str) -> str:
    """Upper-case ``text`` and fix the confusions a VIN cannot hold (O, Q -> 0, I -> 1); nothing else."""
    return text.upper().translate(_CONFUSIONS)


def check_digit(vin: str) -> str:
    """The check digit (``0-9`` or ``X``) that position 9 of a 17-character VIN should hold.

    Raises:
        ValueError: not 17 VIN characters.
    """
    if len(vin) != 17 or not set(vin) <= VIN_CHARS:
        raise ValueError(f"not a 17-character VIN: {vin!r}")
    r = sum(_TRANSLIT[c] * w for c, w in zip(vin, _WEIGHTS)) % 11
    return "X" if r == 10 else str(r)


def check_digit_valid(vin: str) -> bool | None:
    """Position 9 against :func:`check_digit` where the rule applies (see the module doc); None for a
    partial VIN, or a non-North-American one whose digit does not hold."""
    if len(vin) != 17 or not set(vin) <= VIN_CHARS:
        return None
    ok = vin[8] == check_digit(vin)
    if vin[0] in "12345":
        return ok
    return True if ok else None


def decode_wmi(vin: str, table: dict[str, WmiEntry] | None = None) -> WmiEntry | None:
    """The table's entry for the VIN's first 3 characters (then its first 2), or None."""
    table = load_wmi_table() if table is None else table
    if len(vin) < 2:
        return None
    return table.get(vin[:3]) or table.get(vin[:2])


def _runs(text: str) -> list[str]:
    """Candidate strings of one OCR line (module doc): its alphanumeric runs and their join. A run with 2 or
    more lower-case letters is words, not a VIN (VINs are printed in capitals)."""
    runs = [r for r in re.findall(r"[A-Za-z0-9]+", text) if sum(ch.islower() for ch in r) < 2]
    cands = list(runs)
    if len(runs) > 1:
        cands.append("".join(runs))
    out = []
    for c in cands:
        c = c.upper()
        m = _LABEL.match(c)
        if m and len(c) > m.end():
            c = c[m.end():]
        out.append(normalize_vin_chars(c))
    return out


def _key(r: VinReading, score: float) -> tuple:
    return (r.check_digit_valid is True, r.manufacturer is not None, r.complete, r.check_digit_valid is not False,
            len(r.text), score)


def find_vin(lines: Iterable[tuple[str, float]], photo: str | None = None,
             table: dict[str, WmiEntry] | None = None) -> tuple[VinReading, float] | None:
    """The best VIN reading in one photo's OCR lines, with the OCR score of the line it came from.

    Args:
        lines: ``(text, score)`` per OCR line (e.g. :class:`carcheck.models.ocr.TextLine` fields).
        photo: the photo's name, stated in the reading.
        table: the WMI table (default: the shipped ``wmi.yaml``).
    Returns:
        ``(reading, score)``, or None when no line holds a VIN (complete, or a partial read anchored on a
        known WMI).
    """
    table = load_wmi_table() if table is None else table
    best: tuple[tuple, VinReading, float] | None = None
    for text, score in lines:
        for cand in _runs(text):
            if not set(cand) <= VIN_CHARS:
                # keep the longest valid stretches (a stray symbol splits a read)
                parts = [p for p in re.split(r"[^0-9A-HJ-NPR-Z]+", cand) if p]
            else:
                parts = [cand]
            for p in parts:
                if len(p) >= 17:
                    wins = [p[i:i + 17] for i in range(len(p) - 16)]
                    vins = [w for w in wins if w[-4:].isdigit() and any(ch.isalpha() for ch in w)]
                elif len(p) >= MIN_PARTIAL and decode_wmi(p, table) is not None and any(ch.isdigit() for ch in p):
                    vins = [p]
                else:
                    vins = []
                for v in vins:
                    r = _reading(v, photo, table)
                    k = _key(r, float(score))
                    if best is None or k > best[0]:
                        best = (k, r, float(score))
    return None if best is None else (best[1], best[2])


def _reading(vin: str, photo: str | None, table: dict[str, WmiEntry]) -> VinReading:
    entry = decode_wmi(vin, table)
    return VinReading(text=vin, complete=len(vin) == 17, check_digit_valid=check_digit_valid(vin),
                      wmi=vin[:3] if len(vin) >= 3 else None, manufacturer=entry.manufacturer if entry else None,
                      photo=photo)


def best_vin(readings: Sequence[tuple[VinReading, float]]) -> VinReading | None:
    """One VIN for the case from the per-photo readings (order of the module doc), or None."""
    if not readings:
        return None
    return max(readings, key=lambda rs: _key(rs[0], rs[1]))[0]


def _norm(make: str) -> str:
    return re.sub(r"[^a-z0-9]", "", make.lower())


def agrees_with_make(vin: VinReading, top_make: str | None,
                     table: dict[str, WmiEntry] | None = None) -> bool | None:
    """Does the VIN's manufacturer make the make/model head's top make? None when either is unknown
    (a WMI not in the table, or no make / an out-of-scope make/model decision: pass None then)."""
    if not top_make or not vin.wmi:
        return None
    entry = decode_wmi(vin.text, table)
    if entry is None:
        return None
    return _norm(top_make) in {_norm(m) for m in entry.makes}
