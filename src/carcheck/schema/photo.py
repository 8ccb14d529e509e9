"""Report objects of the photo checks (issue 16): what each photo shows (photo type) and its capture
quality. The configs of both rules are in :mod:`carcheck.schema.config`.

They are part of the contract (:mod:`carcheck.schema`: pipeline, report and service speak them). The rules
are :mod:`carcheck.pipeline.photo_type` and :mod:`carcheck.pipeline.quality`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["PHOTO_TYPES", "ISSUE_KINDS", "PhotoTypeDecision", "QualityMeasures", "QualityIssue", "QualityResult"]

#: The photo-type head's classes (logit order).
PHOTO_TYPES = ("document", "exterior_closeup", "exterior_full", "interior", "no_vehicle", "vin_dashboard")
#: Every capture-quality issue kind, in the order a report lists them.
ISSUE_KINDS = ("blur", "underexposed", "overexposed", "glare", "vehicle_too_far", "vehicle_cut_off",
               "low_resolution")


class PhotoTypeDecision(BaseModel):
    """The type of one photo and what the assessment does with it."""

    type: str = Field(description=f"one of {PHOTO_TYPES}")
    probability: float = Field(description="probability of the decided type (for exterior: both exterior types summed)")
    exterior_probability: float = Field(description="P(exterior full) + P(exterior close-up)")
    uncertain: bool = Field(description="winning probability below the configured minimum")
    search_exterior_damage: bool = Field(description="the photo is searched for exterior damage")
    keep_state_heads: bool = Field(description="car-state heads (cleanliness, interior state...) are reported")
    reason: str = Field(description="what the photo was taken for and why, in words")
    probabilities: dict[str, float] = Field(description="every type's probability")
    damage_aware_exterior_probability: float | None = Field(
        None, description="P(exterior) of the damage-aware photo-type head (trained with damaged cars as well); it "
                          "can only add a photo to the damage search (None: head not installed or not consulted)")


class QualityMeasures(BaseModel):
    """What :func:`measure_quality` measured (all at ``QualityConfig.measure_side`` px)."""

    blur: float = Field(description="blur effect, 0 sharp .. 1 blurred (Crete-Roffet et al. 2007)")
    mean_luma: float = Field(description="mean Rec. 601 luma, 0..1")
    highlight_luma: float = Field(description="99th percentile of the luma, 0..1")
    clipped_share: float = Field(description="share of clipped highlights (luma >= 0.97, every channel >= 245)")
    glare_share: float = Field(description="share of the frame in clipped highlights that do not touch the image "
                                           "border (a white sky or studio background does)")


class QualityIssue(BaseModel):
    """One capture problem: what, how much against which limit, and what the user should do."""

    kind: str = Field(description=f"one of {ISSUE_KINDS}")
    value: float = Field(description="the measured value")
    threshold: float = Field(description="the configured limit it crossed")
    reason: str = Field(description="what is wrong and how to retake the photo")


class QualityResult(BaseModel):
    """Quality of one photo: ``ok`` when no issue was found."""

    ok: bool
    issues: list[QualityIssue] = Field(default_factory=list)
    measures: QualityMeasures
