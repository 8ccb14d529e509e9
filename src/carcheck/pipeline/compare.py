"""Pickup vs return (issue 19): which damage is new, pre-existing, changed, or cannot be compared.

Two case reports of one car (before = pickup / earlier claim, after = return / this claim) are compared part by
part. A part is *visible* in a case when an assessed photo shows it (its ``visible_parts``) or a finding lies on
it. Per part:

- **not comparable**: not visible in the after case (nothing can be said about it now), or damaged after but
  not visible in any photo before: said so in ``reason``;
- **new**: visible and clean before, damaged after;
- **changed**: damaged in both, and after shows a damage type the part did not have before or a larger size
  class (small < medium < large) of the same type;
- **pre-existing**: the same types in both, none larger after (also a part damaged before and not after:
  repaired, or missed on the after photos, then flagged for review);
- **clean**: no damage in either case.

Damage on no segmented part (``unassigned``) has no location to compare: it is "not comparable".
A "new" small finding whose part was seen before only in full views is flagged for review (small damage can be
invisible at that distance).

The same-car check uses the verification embeddings when the caller has them (each after photo's smallest
distance to a before photo, median over the after photos, against the verification model's threshold), else the
make/model both reports identified (which cannot tell two cars of one model apart; said so).

Pure: plain :class:`~carcheck.schema.CaseReport` objects (and optional embedding arrays) in, a
:class:`~carcheck.schema.CompareReport` out.
"""

from __future__ import annotations

import datetime as _dt
from typing import Callable

import numpy as np

from ..schema import CompareReport, CompareSide, PartComparison, SameVehicleCheck

__all__ = ["SIZE_RANK", "compare_cases", "same_vehicle_check", "part_status"]

SIZE_RANK = {"small": 0, "medium": 1, "large": 2}
_ORDER = {"new": 0, "changed": 1, "not comparable": 2, "pre-existing": 3, "clean": 4}


class _Side:
    """What one case says about each part."""

    def __init__(self, report) -> None:
        self.report = report
        assessed = [p for p in report.photos if p.status == "assessed"]
        self.visible: dict[str, list[str]] = {}
        self.full_view_only: dict[str, bool] = {}
        for p in assessed:
            for part in p.visible_parts:
                self.visible.setdefault(part, []).append(p.path)
                self.full_view_only[part] = self.full_view_only.get(part, True) and p.view_type != "close-up"
        self.findings: dict[str, list] = {}
        for f in report.findings:
            self.findings.setdefault(f.part, []).append(f)
            for ph in f.photos:
                if ph not in self.visible.setdefault(f.part, []):
                    self.visible[f.part].append(ph)

    def sees(self, part: str) -> bool:
        return bool(self.visible.get(part))

    def damage(self, part: str) -> dict[str, str]:
        """damage type -> largest size class on ``part``."""
        out: dict[str, str] = {}
        for f in self.findings.get(part, []):
            if f.damage not in out or SIZE_RANK[f.size_class] > SIZE_RANK[out[f.damage]]:
                out[f.damage] = f.size_class
        return out

    def review(self, part: str) -> bool:
        return any(f.needs_review for f in self.findings.get(part, []))


def _describe(d: dict[str, str]) -> list[str]:
    return [f"{t} ({s})" for t, s in sorted(d.items())]


def part_status(part: str, before: _Side, after: _Side) -> PartComparison:
    """The comparison of one part (see the module docstring for the rules)."""
    db, da = before.damage(part), after.damage(part)
    common = dict(part=part, before=_describe(db), after=_describe(da),
                  before_photos=list(before.visible.get(part, [])), after_photos=list(after.visible.get(part, [])),
                  needs_review=before.review(part) or after.review(part))
    if part == "unassigned":
        return PartComparison(status="not comparable", reason="damage on no segmented part: its location cannot be "
                              "matched between the two cases", **common)
    if not after.sees(part):
        why = "not visible in any photo after"
        if db:
            why += f" (damaged before: {', '.join(_describe(db))})"
        return PartComparison(status="not comparable", reason=why, **common)
    if not before.sees(part):
        if da:
            return PartComparison(status="not comparable", reason="damaged after but not visible in any photo before",
                                  **common)
        return PartComparison(status="clean", reason="no damage after; not visible in any photo before", **common)
    if not db and not da:
        return PartComparison(status="clean", reason="seen clean in both cases", **common)
    if not db:
        reason = "seen clean before, damaged after"
        if before.full_view_only.get(part, False) and all(s == "small" for s in da.values()):
            reason += "; before, the part was seen only in full views, where small damage may not show"
            common["needs_review"] = True
        return PartComparison(status="new", reason=reason, **common)
    if not da:
        common["needs_review"] = True
        return PartComparison(status="pre-existing", reason="damaged before, no damage found after (repaired, or "
                              "missed on the after photos)", **common)
    grown = []
    for t, s in da.items():
        if t not in db:
            grown.append(f"{t} is new on this part")
        elif SIZE_RANK[s] > SIZE_RANK[db[t]]:
            grown.append(f"{t} grew from {db[t]} to {s}")
    if grown:
        return PartComparison(status="changed", reason="; ".join(grown), **common)
    return PartComparison(status="pre-existing", reason="the same damage before and after, not larger", **common)


def same_vehicle_check(before, after, before_embeddings: np.ndarray | None = None,
                       after_embeddings: np.ndarray | None = None,
                       distance: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                       threshold: float | None = None) -> SameVehicleCheck:
    """Do the two cases show the same car?

    Args:
        before / after: the two :class:`~carcheck.schema.CaseReport` objects.
        before_embeddings / after_embeddings: ``(N, D)`` / ``(M, D)`` float32 verification embeddings of each
            case's vehicle photos, when available.
        distance: pair distance of two ``(K, D)`` batches -> ``(K,)`` (the verification model's), needed with
            embeddings; threshold: distance above which two photos show different cars (the model's EER
            threshold).
    Returns:
        :class:`~carcheck.schema.SameVehicleCheck`.
    """
    mm_b = _top_model(before)
    mm_a = _top_model(after)
    if (before_embeddings is not None and after_embeddings is not None and len(before_embeddings)
            and len(after_embeddings) and distance is not None and threshold is not None):
        n, m = len(before_embeddings), len(after_embeddings)
        a = np.repeat(np.asarray(after_embeddings), n, axis=0)
        b = np.tile(np.asarray(before_embeddings), (m, 1))
        d = np.asarray(distance(a, b), dtype=np.float64).reshape(m, n)
        med = float(np.median(d.min(1)))
        same = med <= threshold
        return SameVehicleCheck(
            verdict="same vehicle" if same else "different vehicle?", method="verification embeddings: median over "
            "the after photos of the distance to the closest before photo", distance=round(med, 4),
            threshold=float(threshold), before_make_model=mm_b, after_make_model=mm_a,
            note=f"{int((d.min(1) <= threshold).sum())} of {m} after photos match a before photo")
    if mm_b and mm_a:
        same = mm_b == mm_a
        return SameVehicleCheck(verdict="same vehicle" if same else "different vehicle?",
                                method="make/model identified in each report (cannot tell two cars of one model apart)",
                                before_make_model=mm_b, after_make_model=mm_a,
                                note="" if same else "the two reports identify different models")
    why = []
    for name, rep, mm in (("before", before, mm_b), ("after", after, mm_a)):
        if mm is None:
            why.append(f"{name}: " + ("no make/model head result" if rep.vehicle is None
                                      else "car outside the models the head knows"))
    return SameVehicleCheck(verdict="unknown", method="none available", before_make_model=mm_b,
                            after_make_model=mm_a, note="; ".join(why))


def _top_model(report) -> str | None:
    v = getattr(report, "vehicle", None)
    if v is None or not v.in_scope or not v.make_model_top3:
        return None
    return v.make_model_top3[0].label


def compare_cases(before, after, before_source: str = "", after_source: str = "",
                  same_vehicle: SameVehicleCheck | None = None) -> CompareReport:
    """Compare two cases part by part.

    Args:
        before / after: :class:`~carcheck.schema.CaseReport` objects (pickup / return).
        before_source / after_source: where each came from (shown in the report).
        same_vehicle: a :func:`same_vehicle_check` result (default: computed from the reports alone).
    Returns:
        :class:`~carcheck.schema.CompareReport`, parts ordered new, changed, not comparable,
        pre-existing, clean.
    """
    b, a = _Side(before), _Side(after)
    parts = sorted(set(b.visible) | set(a.visible), key=str)
    rows = sorted((part_status(p, b, a) for p in parts), key=lambda r: (_ORDER[r.status], r.part))
    sv = same_vehicle or same_vehicle_check(before, after)
    new = [r.part for r in rows if r.status == "new"]
    changed = [r.part for r in rows if r.status == "changed"]
    nc = [r.part for r in rows if r.status == "not comparable" and (r.after or r.before)]
    if new or changed:
        verdict = f"New damage on {len(new)} part(s)" + (f", changed on {len(changed)}" if changed else "") + "."
    else:
        verdict = "No new damage found on the parts visible in both cases."
    if nc:
        verdict += f" {len(nc)} damaged part(s) cannot be compared (not visible in one case)."
    if sv.verdict == "different vehicle?":
        verdict += " The two cases may show different vehicles."
    def side(rep, src):  # noqa: E306
        return CompareSide(case_id=rep.case_id, source=src, photos=rep.summary.photos, assessed=rep.summary.assessed)
    return CompareReport(created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         before=side(before, before_source), after=side(after, after_source), parts=rows,
                         same_vehicle=sv, new_damage=new, changed=changed, not_comparable=nc, verdict=verdict)
