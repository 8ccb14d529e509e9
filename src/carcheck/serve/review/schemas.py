"""Pydantic models of the review API: decisions in, the reviewed state of a case out (kept beside the
stored report, which stays exactly as the assessment wrote it)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from .models import SEVERITIES

__all__ = ["FindingDecisionIn", "AddDamageIn", "FindingReviewOut", "AddedDamageOut", "CaseReviewState",
           "AuditEventOut", "ReviewStats", "GroupStats", "ThresholdSuggestion"]

Severity = Literal[SEVERITIES]  # type: ignore[valid-type]
#: a pixel coordinate: finite (NaN and infinities are refused, 422) and within +-10^6
Coord = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]
#: a damage instance of a finding: '<photo public id>:<instance id>'
InstanceName = Annotated[str, Field(max_length=60, pattern=r"^photo_[0-9a-f]{1,40}:[1-9][0-9]{0,5}$")]


class FindingDecisionIn(BaseModel):
    """One decision on a finding.

    ``confirm``: the finding is right (with the damage type / part given here, if any: a changed one
    makes it ``corrected``); ``reject``: not damage, or not there; ``edit``: change damage type, part,
    severity or note only (a changed type or part makes it ``corrected``; otherwise the state stays).
    """

    action: Literal["confirm", "reject", "edit"]
    damage: str | None = Field(None, max_length=100, description="Damage type (a class of the report's damage "
                                                                  "taxonomy).")
    part: str | None = Field(None, max_length=100, description="Part (a class of the report's parts taxonomy, or "
                                                                "'unassigned').")
    severity: Severity | None = None
    note: str | None = Field(None, max_length=2000)
    rejected_instances: list[InstanceName] | None = Field(
        None, max_length=1000, description="The finding's damage instances (report schema >= 1.14) the reviewer "
        "rejects, each '<photo id>:<instance id>' as listed in the finding's 'instances'; the others are kept. "
        "None: unchanged ([] after a rejection of the finding); []: all kept. A rejected finding rejects all "
        "its instances.")


class AddDamageIn(BaseModel):
    """Damage the model missed, drawn on one stored photo of the case."""

    photo_id: str = Field(..., max_length=40, description="The photo's id (photo_...).")
    damage: str = Field(..., max_length=100)
    part: str = Field(..., max_length=100)
    bbox_xywh: list[Coord] = Field(..., min_length=4, max_length=4, description="[x, y, w, h], original-photo px.")
    polygon: list[Coord] | None = Field(None, description="[x1, y1, x2, y2, ...] (>= 3 points), original-photo px.")
    severity: Severity | None = None
    note: str | None = Field(None, max_length=2000)

    @field_validator("polygon")
    @classmethod
    def _poly(cls, v):
        if v is not None and (len(v) < 6 or len(v) % 2 or len(v) > 2000):
            raise ValueError("polygon needs an even number of coordinates, 3 to 1000 points")
        return v


class FindingReviewOut(BaseModel):
    """A finding of the report with its reviewed state (``pending`` before any decision)."""

    id: int
    index: int = Field(description="Position in report.findings.")
    predicted: dict = Field(description="part, damage, size_class, c_refined, needs_review, review_reasons as the "
                                        "report states them.")
    state: Literal["pending", "confirmed", "corrected", "rejected", "accepted"]
    damage: str
    part: str
    severity: str | None = None
    note: str | None = None
    actor: str | None = None
    updated_at: str | None = None
    instances: list[str] = Field([], description="The finding's damage instances, '<photo id>:<instance id>' "
                                 "(report schema >= 1.14: the instances of its photos with its damage type on its "
                                 "part; empty for older reports).")
    rejected_instances: list[str] = Field([], description="Those a reviewer rejected (all, once the finding is "
                                          "rejected).")


class AddedDamageOut(BaseModel):
    id: str
    photo_id: str
    damage: str
    part: str
    bbox_xywh: list[float]
    polygon: list[float] | None = None
    severity: str | None = None
    note: str | None = None
    actor: str
    created_at: str


class CaseReviewState(BaseModel):
    """The reviewed state of a case's current report."""

    state: Literal["not_assessed", "in_review", "reviewed"]
    reviewed_at: str | None = None
    reviewed_by: str | None = None
    model_version: str | None = None
    findings: list[FindingReviewOut] = []
    added: list[AddedDamageOut] = []
    counts: dict[str, int] = Field({}, description="Findings by state, and 'added'.")


class AuditEventOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    detail: dict | None = None


class GroupStats(BaseModel):
    """Decisions on findings of one group (damage type or model version)."""

    decided: int
    confirmed: int
    corrected: int
    rejected: int
    accepted: int
    confirmed_share: float | None
    corrected_share: float | None
    rejected_share: float | None
    precision: float | None = Field(description="(confirmed + accepted) / decided: findings reviewers found right "
                                                "as stated.")
    precision_damage: float | None = Field(description="(confirmed + corrected + accepted) / decided: real damage, "
                                                       "whatever its type or part.")


class ThresholdSuggestion(BaseModel):
    """The lowest C_refined threshold whose auto-accepted findings (C_refined >= it) reach the target
    precision on reviewed data (Ma et al. II-D-4: the review threshold is set on reviewed prospective
    data and reset for every model version)."""

    model_version: str | None
    target_precision: float
    threshold: float | None = Field(description="None when no threshold reaches the target with enough support.")
    precision: float | None = None
    support: int = Field(0, description="Decided findings with C_refined >= threshold.")
    review_share: float | None = Field(None, description="Fraction of decided findings that would go to review.")
    reason: str | None = None


class ReviewStats(BaseModel):
    reviewed_cases: int
    by_damage: dict[str, GroupStats]
    by_model_version: dict[str, GroupStats]
    suggestions: list[ThresholdSuggestion]
