"""Review statistics (per damage type and per model version) and the review threshold they suggest.

Ma et al. (the end-to-end paper, section II-D-4) send findings with ``C_refined`` below a threshold to
a person, and set that threshold on reviewed prospective data, again for each model version. Here
the reviewed findings of closed reviews are the data: a finding counts as *right* when a reviewer
confirmed it or left it as stated (accepted), *wrong* when rejected or corrected (a corrected
finding would have gone out with the wrong damage type or part). The suggested threshold is the
lowest ``t`` at which the findings with ``C_refined >= t`` (those that would skip review) reach the
target precision, with at least ``min_support`` of them.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Case, Finding
from ..reports import validate_stored_report
from .logic import model_version
from .models import CaseReview, FindingReview
from .schemas import GroupStats, ReviewStats, ThresholdSuggestion

__all__ = ["review_stats", "group_stats", "suggest_threshold", "reviewed_findings"]


def reviewed_findings(session: Session, tenant_id: int | None = None) -> list[dict]:
    """Decided findings of closed reviews: ``{damage (predicted), state, c_refined, model_version}``."""
    q = (select(Finding, FindingReview.state, Case.public_id, Case.report_json)
         .join(FindingReview, FindingReview.finding_id == Finding.id)
         .join(Case, Case.id == Finding.case_id)
         .join(CaseReview, (CaseReview.case_id == Case.id) & (CaseReview.job_id == Case.report_job_id))
         .where(CaseReview.state == "reviewed", FindingReview.state != "pending"))
    if tenant_id is not None:
        q = q.where(Case.tenant_id == tenant_id)
    versions: dict[int, str | None] = {}
    out = []
    for f, state, case_public_id, report in session.execute(q).all():
        if f.case_id not in versions:
            versions[f.case_id] = model_version(validate_stored_report(case_public_id, report)
                                                if report is not None else None)
        out.append({"damage": f.damage, "state": state, "c_refined": float(f.c_refined),
                    "model_version": versions[f.case_id] or "unknown", "case_id": f.case_id})
    return out


def _share(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def group_stats(rows: list[dict]) -> GroupStats:
    """Counts, shares and precision of decided findings (see the module docstring)."""
    c = defaultdict(int)
    for r in rows:
        c[r["state"]] += 1
    n = len(rows)
    return GroupStats(decided=n, confirmed=c["confirmed"], corrected=c["corrected"], rejected=c["rejected"],
                      accepted=c["accepted"], confirmed_share=_share(c["confirmed"], n),
                      corrected_share=_share(c["corrected"], n), rejected_share=_share(c["rejected"], n),
                      precision=_share(c["confirmed"] + c["accepted"], n),
                      precision_damage=_share(c["confirmed"] + c["corrected"] + c["accepted"], n))


def suggest_threshold(rows: list[dict], target: float = 0.9, min_support: int = 20,
                      version: str | None = None) -> ThresholdSuggestion:
    """The lowest C_refined threshold whose findings at or above it reach ``target`` precision.

    Args:
        rows: decided findings (:func:`reviewed_findings`) of one model version.
        target: precision wanted among findings that skip review (fraction).
        min_support: fewest findings at or above the threshold for the estimate to count.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target precision {target}: must be in (0, 1]")
    ranked = sorted(rows, key=lambda r: -r["c_refined"])
    best = None
    right = 0
    for k, r in enumerate(ranked, 1):
        right += r["state"] in ("confirmed", "accepted")
        # a threshold only separates distinct scores: take it where the next score is lower
        if k < len(ranked) and ranked[k]["c_refined"] == r["c_refined"]:
            continue
        if k >= min_support and right / k >= target:
            best = (r["c_refined"], right / k, k)  # keeps lowering while the target holds
    if best is None:
        why = (f"only {len(rows)} decided finding(s), fewer than {min_support}" if len(rows) < min_support
               else f"no threshold reaches precision {target:g} with >= {min_support} findings above it")
        return ThresholdSuggestion(model_version=version, target_precision=target, threshold=None, reason=why,
                                   support=0)
    t, p, k = best
    return ThresholdSuggestion(model_version=version, target_precision=target, threshold=round(t, 4),
                               precision=round(p, 4), support=k, review_share=round(1 - k / len(rows), 4))


def review_stats(session: Session, tenant_id: int | None = None, target: float = 0.9,
                 min_support: int = 20) -> ReviewStats:
    """Statistics of the tenant's (or, with None, every tenant's) closed reviews, and one threshold
    suggestion per model version."""
    rows = reviewed_findings(session, tenant_id)
    by_damage, by_version = defaultdict(list), defaultdict(list)
    for r in rows:
        by_damage[r["damage"]].append(r)
        by_version[r["model_version"]].append(r)
    return ReviewStats(reviewed_cases=len({r["case_id"] for r in rows}),
                       by_damage={k: group_stats(v) for k, v in sorted(by_damage.items())},
                       by_model_version={k: group_stats(v) for k, v in sorted(by_version.items())},
                       suggestions=[suggest_threshold(v, target, min_support, k) for k, v in sorted(by_version.items())])
