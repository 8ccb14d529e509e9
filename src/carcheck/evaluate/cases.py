"""Case-level scores of a report against a case's expectations file (issue 26): what a claims adjuster
reads from the report of one real multi-photo case.

An expectations file (``cases_dev/expectations/<case>.json``; format in ``../shared/data/cases_dev/README.md``)
lists the damaged part *groups* (each inner list one damaged area; any part of it counts as a hit), the
parts seen clean, the non-exterior photos and the photos of another car. Parts in neither list could not
be judged and are not scored either way.

Scores of one case (:func:`score_case`), all counts:

- ``groups`` / ``groups_confident`` / ``groups_any``: damaged groups, those with a per-part finding on
  one of their parts that needs no review, those with any per-part finding;
- ``confident_parts`` and ``confident_outside_groups``: confident per-part findings, and those on a part
  that lies in no damaged group (wrong or unsupported; on a clean part or an unjudged one);
- ``clean_parts``, ``clean_reported_confident`` / ``clean_reported_any``: parts seen clean, and those the
  report calls damaged with / without confidence;
- ``non_exterior_photos`` and ``non_exterior_searched``: photos that are not exterior views, and those
  the report still searched for exterior damage (a detection or a finding on them);
- ``odd_photos``, ``odd_flagged``, ``false_flags``: photos of another car, those flagged as a different
  vehicle, photos of the case's own car flagged.

Reliability (:func:`reliability`): the expected calibration error of per-part probabilities, ECE =
sum_b (n_b / N) |mean(y_b) - mean(p_b)| over equal-width bins (Naeini et al., AAAI 2015; Guo et al.,
ICML 2017, eq. 3).

Pure functions on report dicts (``report.json`` as written) and expectation dicts: no models, no I/O
but :func:`load_expectations`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["load_expectations", "part_labels", "score_case", "sum_scores", "reliability", "SCORE_KEYS"]

#: The counts :func:`score_case` returns and :func:`sum_scores` adds up.
SCORE_KEYS = ("groups", "groups_confident", "groups_any", "confident_parts", "confident_outside_groups",
              "clean_parts", "clean_reported_confident", "clean_reported_any", "non_exterior_photos",
              "non_exterior_searched", "odd_photos", "odd_flagged", "false_flags")


def load_expectations(path: str | Path) -> dict:
    """Read one expectations JSON.

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON, or a field is missing or of the wrong
            kind (names the file and the field).
    """
    path = Path(path)
    try:
        exp = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    for key, kind in (("case", str), ("damaged_part_groups", list), ("clean_parts", list),
                      ("not_exterior_photos", dict)):
        if not isinstance(exp.get(key), kind):
            raise ValueError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    if any(not isinstance(g, list) or not g for g in exp["damaged_part_groups"]):
        raise ValueError(f"{path}: field 'damaged_part_groups' must be a list of non-empty lists")
    exp.setdefault("other_vehicle_photos", [])
    exp.setdefault("damage_types", [[] for _ in exp["damaged_part_groups"]])
    return exp


def _name(path: str) -> str:
    return Path(path).name


def part_labels(report: Mapping, exp: Mapping) -> list[tuple[dict, int]]:
    """The report's per-part findings that the expectations judge: ``[(part finding dict, label)]``,
    label 1 when the part lies in a damaged group, 0 when it was seen clean; findings on parts
    judged neither way are left out. Used to calibrate and to check P(part damaged)."""
    damaged = {p for g in exp["damaged_part_groups"] for p in g}
    clean = set(exp["clean_parts"]) - damaged
    out = []
    for f in report.get("parts") or []:
        if f["part"] in damaged:
            out.append((f, 1))
        elif f["part"] in clean:
            out.append((f, 0))
    return out


def score_case(report: Mapping, exp: Mapping, confident: Iterable[str] | None = None) -> dict:
    """Counts of one case (module doc).

    Args:
        report: the case's ``report.json`` as a dict.
        exp: its expectations (:func:`load_expectations`).
        confident: the parts to count as confident; None: the report's own per-part findings with
            ``needs_review`` false (a benchmark passes its cross-validated decisions here).
    Returns:
        ``{key: int for key in SCORE_KEYS}`` plus ``missed_groups`` / ``wrong_parts`` /
        ``clean_confident`` / ``odd_missed`` / ``flagged_wrongly`` (lists of names, for reading).
    """
    parts = {f["part"]: f for f in report.get("parts") or []}
    conf = {p for p, f in parts.items() if not f["needs_review"]} if confident is None else set(confident) & set(parts)
    groups = [set(g) for g in exp["damaged_part_groups"]]
    in_groups = set().union(*groups) if groups else set()
    clean = set(exp["clean_parts"]) - in_groups
    non_ext = {_name(k) for k in exp["not_exterior_photos"]}
    odd = {_name(k) for k in exp.get("other_vehicle_photos", [])}
    searched = set()
    for ph in report.get("photos") or []:
        if ph.get("detections"):
            searched.add(_name(ph["path"]))
    for f in report.get("findings") or []:
        searched.update(_name(p) for p in f.get("photos", []))
    cons = report.get("consistency") or {}
    flagged = {_name(p) for p in cons.get("different_vehicle") or []}
    photos = {_name(ph["path"]) for ph in report.get("photos") or []}
    out = {
        "groups": len(groups),
        "groups_confident": sum(bool(g & conf) for g in groups),
        "groups_any": sum(bool(g & set(parts)) for g in groups),
        "confident_parts": len(conf),
        "confident_outside_groups": len(conf - in_groups),
        "clean_parts": len(clean),
        "clean_reported_confident": len(clean & conf),
        "clean_reported_any": len(clean & set(parts)),
        "non_exterior_photos": len(non_ext & photos),
        "non_exterior_searched": len(non_ext & searched),
        "odd_photos": len(odd & photos),
        "odd_flagged": len(odd & flagged),
        "false_flags": len(flagged - odd),
        "missed_groups": ["/".join(sorted(g)) for g in groups if not g & conf],
        "wrong_parts": sorted(conf - in_groups),
        "clean_confident": sorted(clean & conf),
        "odd_missed": sorted((odd & photos) - flagged),
        "flagged_wrongly": sorted(flagged - odd),
    }
    return out


def sum_scores(scores: Sequence[Mapping]) -> dict:
    """Add up :func:`score_case` counts over cases and derive the rates a benchmark states:
    ``recall_confident`` / ``recall_any`` (of damaged groups), ``confident_in_groups`` (share of confident
    parts inside a damaged group), ``clean_confident_rate`` / ``clean_any_rate`` (of clean parts),
    ``undamaged_cases`` and ``undamaged_cases_with_confident`` (cases with no damaged group),
    ``non_exterior_searched_rate``. A rate with an empty denominator is None."""
    tot = {k: int(sum(s[k] for s in scores)) for k in SCORE_KEYS}

    def rate(a: int, b: int):
        return round(a / b, 4) if b else None

    undamaged = [s for s in scores if s["groups"] == 0]
    tot.update({
        "cases": len(scores),
        "recall_confident": rate(tot["groups_confident"], tot["groups"]),
        "recall_any": rate(tot["groups_any"], tot["groups"]),
        "confident_in_groups": rate(tot["confident_parts"] - tot["confident_outside_groups"], tot["confident_parts"]),
        "clean_confident_rate": rate(tot["clean_reported_confident"], tot["clean_parts"]),
        "clean_any_rate": rate(tot["clean_reported_any"], tot["clean_parts"]),
        "undamaged_cases": len(undamaged),
        "undamaged_cases_with_confident": sum(s["confident_parts"] > 0 for s in undamaged),
        "non_exterior_searched_rate": rate(tot["non_exterior_searched"], tot["non_exterior_photos"]),
    })
    return tot


def reliability(p: Sequence[float], y: Sequence[int], bins: int = 10) -> dict:
    """Reliability table and expected calibration error of probabilities ``p`` (each in [0, 1]) against
    outcomes ``y`` (0 / 1), over ``bins`` equal-width bins (module doc).

    Returns:
        ``{"ece": float | None, "n": int, "bins": [{"lo", "hi", "n", "mean_p", "frac_positive"}]}``
        (empty bins are listed with n 0; ``ece`` None when there is no sample).

    Raises:
        ValueError: ``p`` and ``y`` differ in length, or a probability lies outside [0, 1].
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"{p.shape[0]} probabilities but {y.shape[0]} outcomes")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        mp = float(p[m].mean()) if n else None
        fy = float(y[m].mean()) if n else None
        if n:
            ece += n / p.size * abs(fy - mp)
        rows.append({"lo": round(float(edges[b]), 2), "hi": round(float(edges[b + 1]), 2), "n": n,
                     "mean_p": None if mp is None else round(mp, 4), "frac_positive": None if fy is None else round(fy, 4)})
    return {"ece": round(ece, 4) if p.size else None, "n": int(p.size), "bins": rows}
