"""Report objects of the photo checks (issue 16): what each photo shows (photo type) and its capture
quality, with the configs of both rules.

They are part of the report contract (pipeline, report and service speak them; ``AssessConfig`` states
the configs) and live in the report package so that the schema and the HTML use them without importing
the pipeline. The rules are :mod:`carcheck.pipeline.photo_type` and :mod:`carcheck.pipeline.quality`,
which re-export these names.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PHOTO_TYPES", "ISSUE_KINDS", "PhotoTypeConfig", "PhotoTypeDecision", "QualityConfig", "QualityMeasures",
           "QualityIssue", "QualityResult"]

#: The photo-type head's classes (logit order).
PHOTO_TYPES = ("document", "exterior_closeup", "exterior_full", "interior", "no_vehicle", "vin_dashboard")
#: Every capture-quality issue kind, in the order a report lists them.
ISSUE_KINDS = ("blur", "underexposed", "overexposed", "glare", "vehicle_too_far", "vehicle_cut_off",
               "low_resolution")


class PhotoTypeConfig(BaseModel):
    """Thresholds of the photo-type rule."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float = Field(0.85, gt=0, le=1, description="winning probability below which the type is "
                                                                 "uncertain (flagged for review)")
    search_if_exterior_at_least: float = Field(0.0, ge=0, le=1, description="an uncertain photo whose exterior "
                                                                              "probability reaches this is still "
                                                                              "searched for exterior damage")


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


class QualityConfig(BaseModel):
    """Thresholds of the capture-quality checks. Defaults: the values bench/quality.py calibrated (each check
    fires on <= 1% of the pooled clean held-out photos of the shared sets, 2% for the two vehicle-extent checks;
    bench/results/quality.json); ``min_short_side`` is a policy (several shared sets are thumbnails themselves)."""

    model_config = ConfigDict(extra="forbid")

    measure_side: int = Field(512, ge=64, description="longer side (px) the measures are taken at")
    blur_max: float = Field(0.561, gt=0, lt=1, description="blur effect (0 sharp .. 1 blurred) above which "
                                                             "the photo is blurred")
    dark_highlight_max: float = Field(0.641, gt=0, lt=1, description="99th-percentile luma at or below which the "
                                                                      "photo is under-exposed (nothing in it is bright)")
    bright_mean_min: float = Field(0.706, gt=0, lt=1, description="mean luma at or above which the photo is "
                                                                   "over-exposed")
    glare_share_max: float = Field(0.097, gt=0, lt=1, description="share of the frame in clipped highlights away from "
                                                                   "the image border above which a photo that is not "
                                                                   "over-exposed has glare")
    vehicle_min_fraction: float = Field(0.119, gt=0, lt=1, description="share of the frame a full exterior view's "
                                                                        "vehicle must cover")
    cut_off_border_max: float = Field(0.067, gt=0, le=1, description="share of one image border the vehicle of a "
                                                                      "full exterior view may touch")
    min_short_side: int = Field(160, ge=1, description="shorter side (px) of the photo as taken, below which "
                                                         "its resolution is too low")


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
