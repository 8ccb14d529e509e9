"""The case report: a versioned pydantic schema (JSON Schema via ``CaseReport.model_json_schema()``).

Terms follow Ma et al. (IEEE T-ITS 2023, section II-D): a *damaged part* D_k is a connected
region sharing one (part, damage type) pair; C_base is its mean damage probability; K_agree the
share of photos showing the part that agree on the finding; C_refined = C_base · K_agree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = "1.3"  # 1.3: path_bytes (file names that are not UTF-8), ignored_files, skipped blank / too small / duplicate photos; 1.2: config states precision and threads; 1.1: image-level heads (presence, damage filter, severity, car state, make/model, same vehicle)

__all__ = ["SCHEMA_VERSION", "PhotoDetection", "PhotoReport", "Finding", "CaseSummary", "CaseReport", "AssessConfigModel",
           "ClassScore", "HeadResult", "DamageFilter", "VehicleMatch", "VehicleIdentity", "Consistency"]


class ClassScore(BaseModel):
    label: str
    probability: float = Field(description="Softmax probability (fraction).")


class HeadResult(BaseModel):
    """Output of one image-level classifier on one photo."""

    task: str
    label: str | None = Field(description="Top class; None when the photo is out of scope for this head.")
    probability: float | None = None
    top: list[ClassScore] = Field([], description="Best classes, most probable first.")
    out_of_scope: bool = Field(False, description="The head's OOD rule (max logit below its validation threshold, "
                                                  "Vaze et al. 2022) says the photo is unlike its training photos.")
    ood_score: float | None = Field(None, description="The head's OOD score (max logit).")


class DamageFilter(BaseModel):
    """CarDD section V-G: the damaged/undamaged image classifier double-checks the segmenter."""

    probability_damaged: float
    verdict: Literal["clean", "agrees", "damage missed?", "no damage?"] = Field(
        description="clean: filter says undamaged (p > threshold) and no damage was segmented; agrees; "
                    "'damage missed?': the filter sees damage the segmenter did not find; "
                    "'no damage?': the segmenter found damage on a photo the filter calls undamaged.")


class VehicleMatch(BaseModel):
    """Same-vehicle check of one photo against the case's majority vehicle."""

    distance: float = Field(description="1 - P(same vehicle) to the case's reference photo, in [0, 1].")
    same_vehicle: bool
    reference: str = Field(description="The photo that stands for the case's majority vehicle.")


class VehicleIdentity(BaseModel):
    """Which car the case shows (make/model head averaged over the case's vehicle photos)."""

    make_model_top3: list[ClassScore]
    make_top3: list[ClassScore]
    in_scope: bool = Field(description="False when most photos fall outside the known models (OOD rule).")
    known_models: int = Field(description="Number of models the head knows.")


class Consistency(BaseModel):
    """Do all vehicle photos of the case show the same car?"""

    checked_photos: int
    threshold: float = Field(description="Distance threshold (EER threshold on validation pairs).")
    reference: str | None = None
    different_vehicle: list[str] = Field([], description="Photos flagged 'different vehicle?'.")
    note: str = ""


class PhotoDetection(BaseModel):
    """One damaged region D_k in one photo."""

    part: str = Field(description="Part name, or 'unassigned' when the damage lies on no segmented part.")
    damage: str = Field(description="Damage type.")
    area_px: float = Field(description="Area in px² of the original photo.")
    area_fraction_of_part: float = Field(description="Area / visible area of the part in this photo (fraction); "
                                                     "of the whole image for 'unassigned'.")
    area_fraction_of_image: float
    size_class: Literal["small", "medium", "large"]
    c_base: float = Field(description="Mean damage-class probability over the region (Ma et al. II-D-3).")
    bbox_xywh: list[float] = Field(description="Bounding box in original-photo pixels.")


class PhotoReport(BaseModel):
    """What happened to one input file."""

    path: str = Field(description="The file as printable text: a byte of a name that is not valid UTF-8 is "
                                  "written as \\xNN (then path_bytes holds the exact name).")
    path_bytes: str | None = Field(None, description="Base64 of the file name's exact bytes, only when it is not "
                                                     "valid UTF-8 (None: path is exact).")
    status: Literal["assessed", "skipped", "failed"]
    reason: str | None = Field(None, description="Why a photo was skipped (no vehicle, blank or near-constant, "
                                                 "too small to judge, duplicate of an earlier photo) or failed.")
    width: int | None = None
    height: int | None = None
    vehicle_score: float | None = Field(None, description="Presence-gate score (fraction).")
    visible_parts: list[str] = []
    view_type: Literal["close-up", "full view"] | None = Field(
        None, description="Distance surrogate (Ma et al. II-D-2): number of visible parts.")
    same_perspective_as: list[str] = Field([], description="Photos with the same set of visible parts.")
    closeup_of: list[str] = Field([], description="Photos whose visible parts strictly contain this photo's.")
    detections: list[PhotoDetection] = []
    presence_probability: float | None = Field(None, description="Vehicle-presence head P(vehicle) (fraction).")
    damage_filter: DamageFilter | None = None
    car_state: dict[str, HeadResult] = Field({}, description="Every installed car-state head by task (damaged, "
                                             "SOCAR state / defect / dirt...); 'severity' (minor / moderate / "
                                             "severe) only on photos with damage.")
    make_model: HeadResult | None = None
    vehicle_match: VehicleMatch | None = None
    review_reasons: list[str] = Field([], description="Why a person should look at this photo.")
    gradcam: str | None = Field(None, description="Head whose Grad-CAM map the HTML report shows for this photo.")
    seconds: float | None = None


class Finding(BaseModel):
    """One (part, damage type) finding reconciled across the case's photos."""

    part: str
    damage: str
    size_class: Literal["small", "medium", "large"]
    area_fraction_of_part: float = Field(description="Largest per-photo fraction of the part covered.")
    c_base: float = Field(description="Highest C_base over the photos showing the finding.")
    k_agree: float = Field(description="Photos agreeing on the finding / photos in which the part is visible.")
    c_refined: float = Field(description="C_base · K_agree.")
    needs_review: bool
    review_reasons: list[str] = []
    photos: list[str]


class CaseSummary(BaseModel):
    photos: int
    assessed: int
    skipped: int
    failed: int
    findings: int
    findings_for_review: int
    damaged_parts: list[str]
    verdict: str = Field(description="One-line outcome for a claims handler.")


class AssessConfigModel(BaseModel):
    """The thresholds the report was produced with (all configurable)."""

    vehicle_threshold: float
    part_coverage_threshold: float
    min_region_fraction: float
    visible_part_fraction: float
    closeup_max_parts: int
    size_thresholds: list[float]
    review_threshold: float
    longest_side_px: int
    precision: str | None = None  # the precision actually used: fp32 or bf16 (resolved from "auto")
    engine: str | None = None  # the inference engine actually used: torch or onnx (resolved from "auto")
    threads: int | None = None
    presence_threshold: float | None = None
    clean_threshold: float | None = None
    verification_threshold: float | None = None


class CaseReport(BaseModel):
    """The whole case: per-photo entries, reconciled findings, summary."""

    schema_version: str = SCHEMA_VERSION
    case_id: str
    created: str
    carcheck_version: str
    models: dict[str, str]
    config: AssessConfigModel
    summary: CaseSummary
    findings: list[Finding]
    photos: list[PhotoReport]
    vehicle: VehicleIdentity | None = None
    consistency: Consistency | None = None
    privacy: str
    ignored_files: list[str] = Field([], description="Entries of the given folders left out on purpose: hidden "
                                                     "files and OS clutter (.DS_Store, Thumbs.db, desktop.ini).")
