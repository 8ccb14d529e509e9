"""The case report: a versioned pydantic schema (JSON Schema via ``CaseReport.model_json_schema()``).

Terms follow Ma et al. (IEEE T-ITS 2023, section II-D): a *damaged part* D_k is a connected
region sharing one (part, damage type) pair; C_base is its mean damage probability; K_agree the
share of photos showing the part that agree on the finding; C_refined = C_base · K_agree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from .claims import CaseEstimate, ReuseMatch
from .config import AssessConfig
from .photo import PhotoTypeDecision, QualityResult
from .vehicle import OdometerReading, PlateReading, VinReading

SCHEMA_VERSION = "1.15"  # 1.15: config fusion.door_end_min_share / door_end_max_distance (door-anchored ends on the part map, issue 26 item 5) and fusion.missed_damage_longest_side (the second look's finer damage pass, issue 26); 1.14: damage instances (connected components of one damage type on the damage map): per-photo instances, per-part instances and instance_count, issue 27; 1.13: photo_type.damage_aware_exterior_probability and config photo_type.search_if_damage_aware_exterior_at_least (a second photo-type head, trained with damaged cars, adds photos to the damage search), issue 26; 1.12: optional per-photo plate (licence plate read on exterior photos, masked: masked, confidence, agrees_with_case), vehicle_match.plate_agrees, consistency.plate, config plate_text, issue 30; 1.11: optional vehicle.vin (VIN read by OCR: text, complete, check_digit_valid, wmi, manufacturer, photo, agrees_with_make_model) and vehicle.odometer (value, unit, photo, confidence), issue 30; 1.10: per-part p_damaged (calibrated P(part damaged), the review decision), features (its inputs), grade / grade_reason (minor / moderate / severe), issue 26; 1.9: config fusion.end_dominance (one end of the car per photo on the part map); 1.8: optional parts (findings per physical part, K_agree over views, issue 16); 1.7: optional size_cm per detection and finding (damage size in cm from the typical part sizes, issue 16), config size; 1.6: optional photo_type and quality per photo (issue 16), config photo_type / quality; 1.5: optional estimate (repair estimate) and reuse (photos matching indexed photos), issue 19; 1.4: config is the full AssessConfig (fusion nested, every threshold), model_files with SHA-256, model_thresholds, detection reassigned_from / review_reasons (damage x part plausibility); 1.3: path_bytes (file names that are not UTF-8), ignored_files, skipped blank / too small / duplicate photos; 1.2: config states precision and threads; 1.1: image-level heads (presence, damage filter, severity, car state, make/model, same vehicle)

__all__ = ["SCHEMA_VERSION", "PRIVACY_NOTE", "PhotoDetection", "PhotoReport", "Finding", "PartFinding", "CaseSummary",
           "CaseReport", "ModelFile", "ClassScore", "HeadResult", "DamageFilter", "VehicleMatch", "VehicleIdentity",
           "Consistency", "SizeCm", "DamageInstance"]

#: What every report says about the privacy blur of its images (``CaseReport.privacy``; the blur itself is
#: :mod:`carcheck.report.privacy`).
PRIVACY_NOTE = ("Faces and licence plates were blurred by carcheck's privacy head (a mask head on the EfficientNet-Lite0 "
                "pass, trained on Open Images plates and WIDER FACE street scenes; docs/privacy.md). On held-out photos it "
                "covered 84% of plates (98% of those 40 px or more high, 55% of 10-19 px, 14% under 10 px) and 91% of "
                "faces 16 px or larger, with about 0.8 extra regions per clean car photo. It misses small and distant "
                "plates, some faces in profile or turned away, and does not blur bodies, reflections or printed names: "
                "check before sharing outside the claim.")


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
    plate_agrees: bool | None = Field(None, description="Plate text decided this photo (schema >= 1.12): True, it "
                                      "shows the case's plate (same vehicle whatever the appearance); False, another "
                                      "plate (flagged); None: appearance decided.")


class VehicleIdentity(BaseModel):
    """Which car the case shows (make/model head averaged over the case's vehicle photos), and from 1.11 what
    its VIN and odometer photos say (OCR). Without a make/model head the lists are empty, ``known_models`` is 0
    and ``in_scope`` False; the section is then there only for ``vin`` / ``odometer``."""

    make_model_top3: list[ClassScore]
    make_top3: list[ClassScore]
    in_scope: bool = Field(description="False when most photos fall outside the known models (OOD rule).")
    known_models: int = Field(description="Number of models the head knows (0: no make/model head).")
    vin: VinReading | None = Field(None, description="The VIN read on a VIN-plate / dashboard or document photo "
                                   "(OCR); None when none was read or no such photo (schema >= 1.11).")
    odometer: OdometerReading | None = Field(None, description="The odometer reading of a dashboard photo (OCR); "
                                             "None when none was read or no such photo (schema >= 1.11).")


class Consistency(BaseModel):
    """Do all vehicle photos of the case show the same car?"""

    checked_photos: int
    threshold: float = Field(description="Distance threshold (EER threshold on validation pairs).")
    reference: str | None = None
    different_vehicle: list[str] = Field([], description="Photos flagged 'different vehicle?'.")
    note: str = ""
    plate: str | None = Field(None, description="The case's licence plate, masked (read on at least two exterior "
                              "photos; schema >= 1.12); None when no plate was read twice.")


class SizeCm(BaseModel):
    """A damage size in centimetres, scaled from the typical real size of the part it lies on
    (``carcheck/pipeline/part_sizes.yaml``) by the ratio of the region's pixels to the part's pixels in
    the photo, along each image axis (:mod:`carcheck.pipeline.size`). Either an estimate with its
    low-high range, or ``reason`` saying why there is none (all numbers None)."""

    width_cm: float | None = Field(None, description="Horizontal extent of the region's box, cm (typical part size).")
    height_cm: float | None = Field(None, description="Vertical extent of the region's box, cm.")
    area_cm2: float | None = Field(None, description="Area of the region's pixels, cm².")
    width_range_cm: tuple[float, float] | None = Field(None, description="Low-high of width_cm over the part-size "
                                                       "range (and the part's cut-off extent).")
    height_range_cm: tuple[float, float] | None = None
    area_range_cm2: tuple[float, float] | None = None
    part_visible_fraction: float | None = Field(None, description="Estimated share of the part's extent inside the "
                                                "photo along the axis the photo's edge cuts (1: not cut off, or "
                                                "its visible extent already spans its typical size; basis says "
                                                "when it is cut off).")
    basis: str = Field("", description="What the scale came from: part, its typical size, its extent in px.")
    reason: str | None = Field(None, description="Why there is no estimate (damage on no part, part cut off or "
                               "too small in the photo, no typical size declared).")


class DamageInstance(BaseModel):
    """One damage instance in one photo (schema >= 1.14, issue 27): an 8-connected component of one damage type
    on the damage map, *not* split at part boundaries (:mod:`carcheck.pipeline.instances`; chosen over the
    CenterNet head's boxes and its centre grouping by CarDD mask AP, docs/cardd.md). Where a fusion region
    D_k splits one scratch at a door edge into two regions, the instance is the one scratch."""

    id: int = Field(ge=1, description="Its number in the photo, 1 = largest; drawn beside its outline in the HTML.")
    photo: str = Field(description="The photo (its report path).")
    damage: str = Field(description="Damage type.")
    score: float = Field(description="Mean damage-class probability over its pixels (fraction).")
    bbox_xywh: list[float] = Field(description="Bounding box in original-photo pixels.")
    area_px: float = Field(description="Mask area in px² of the original photo.")
    parts: list[str] = Field([], description="Parts its pixels lie on (after the plausibility step), most pixels "
                             "first; 'unassigned' where on no part.")
    polygon: list[float] = Field([], description="Outer outline [x1, y1, x2, y2, ...] in original-photo pixels "
                                 "(simplified, at most 64 points).")
    size_cm: SizeCm | None = Field(None, description="Size in cm on the scale of parts[0] (or why none).")


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
    reassigned_from: str | None = Field(None, description="The part the damage was segmented on, when that pair is "
                                        "implausible (e.g. a flat tyre on a door) and it was moved to the plausible "
                                        "part touching it.")
    review_reasons: list[str] = Field([], description="Why a person should look at this region (e.g. an "
                                      "implausible damage type for its part).")
    size_cm: SizeCm | None = Field(None, description="Size in cm (or why none); None in reports before 1.7.")


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
    instances: list[DamageInstance] = Field([], description="Damage instances of the photo, largest first "
                                            "(schema >= 1.14).")
    presence_probability: float | None = Field(None, description="Vehicle-presence head P(vehicle) (fraction).")
    damage_filter: DamageFilter | None = None
    car_state: dict[str, HeadResult] = Field({}, description="Every installed car-state head by task (damaged, "
                                             "SOCAR state / defect / dirt...); 'severity' (minor / moderate / "
                                             "severe) only on photos with damage.")
    make_model: HeadResult | None = None
    photo_type: PhotoTypeDecision | None = Field(None, description="What the photo shows (exterior full view / "
                                                 "close-up, interior, document, VIN / dashboard, no vehicle) and what "
                                                 "the assessment did with it; None without the photo-type head.")
    quality: QualityResult | None = Field(None, description="Capture quality (blur, exposure, glare, vehicle too far "
                                          "or cut off, resolution) with what to retake; None when not checked.")
    vehicle_match: VehicleMatch | None = None
    plate: PlateReading | None = Field(None, description="The licence plate read on this exterior photo, masked "
                                       "(schema >= 1.12); None: none legible, or not an exterior photo.")
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
    size_cm: SizeCm | None = Field(None, description="Size in cm from the photo that shows the part best (largest "
                                   "share of the part in frame, then the narrowest range); None before 1.7.")
    size_cm_photo: str | None = Field(None, description="The photo size_cm was measured on.")


class PartFinding(BaseModel):
    """One physical part with damage, reconciled across views (Ma et al. II-D-3/4 per part; issue 16):
    is this part damaged, whatever type each view calls it. A close-up and the full view it belongs to
    are one view; photos of the same perspective are one view."""

    part: str
    damages: list[str] = Field(description="Plausible damage types seen on the part, most confident first.")
    c_base: float = Field(description="Highest C_base of the part's plausible findings.")
    k_agree: float = Field(description="Views showing damage on the part / views showing the part.")
    c_refined: float = Field(description="C_base · K_agree.")
    views_damaged: int
    views_visible: int
    photos: list[str] = Field(description="Photos showing the damage.")
    needs_review: bool
    review_reasons: list[str] = []
    p_damaged: float | None = Field(None, description="Calibrated P(part damaged) (carcheck.pipeline.confidence: a "
                                    "logistic model of the features below, fitted on the development cases); "
                                    "needs_review is decided on it (P below the model's threshold). Unlike C_refined "
                                    "it is a probability. None when no confidence model is installed (then "
                                    "C_refined < review_threshold decides, the end-to-end paper's rule).")
    features: dict[str, float] = Field({}, description="The inputs of p_damaged (c_base, k_agree, "
                                       "log_views_damaged, sqrt_area, p_filter, exterior_certain).")
    grade: Literal["minor", "moderate", "severe"] | None = Field(None, description="How bad (carcheck.pipeline."
                                                                 "severity): severity head, share of the part "
                                                                 "covered, damage type.")
    grade_reason: str = Field("", description="Why this grade.")
    instances: list[DamageInstance] = Field([], description="The damage instances on the part (its damage types, "
                                            "in the photos showing its damage), by photo; the same dent seen in "
                                            "two photos is listed twice (schema >= 1.14).")
    instance_count: int | None = Field(None, description="Damage instances on the part in the photo that shows the "
                                       "most of them (views are not summed: one dent is in several photos); "
                                       "None before 1.14.")


class CaseSummary(BaseModel):
    photos: int
    assessed: int
    skipped: int
    failed: int
    findings: int
    findings_for_review: int
    damaged_parts: list[str]
    verdict: str = Field(description="One-line outcome for a claims handler.")


class ModelFile(BaseModel):
    """One model file the assessment loaded."""

    role: str = Field(description="segmenter, or head:<task> (presence, damaged, severity, make_model, ...).")
    file: str = Field(description="File name.")
    sha256: str = Field(description="SHA-256 of the file's bytes (hex).")
    bytes: int


class CaseReport(BaseModel):
    """The whole case: per-photo entries, reconciled findings, summary."""

    schema_version: str = SCHEMA_VERSION
    case_id: str
    created: str
    carcheck_version: str
    models: dict[str, str]
    config: AssessConfig = Field(description="The full config, precision / engine / threads as used.")
    model_files: list[ModelFile] = Field([], description="Every model file loaded, with its SHA-256.")
    model_thresholds: dict[str, float] = Field({}, description="Thresholds that come with a model file: "
                                               "verification (same-vehicle distance), make_model_ood (at the "
                                               "precision used).")
    taxonomies: dict[str, str] = Field({}, description="Taxonomy of each segmentation head (parts, damage): "
                                       "the class names of the findings and of the HTML legend.")
    summary: CaseSummary
    findings: list[Finding]
    parts: list[PartFinding] = Field([], description="Findings per physical part (K_agree over views); the "
                                     "confident ones are what the report states as damaged. Empty before 1.8.")
    photos: list[PhotoReport]
    vehicle: VehicleIdentity | None = None
    consistency: Consistency | None = None
    privacy: str
    ignored_files: list[str] = Field([], description="Entries of the given folders left out on purpose: hidden "
                                                     "files and OS clutter (.DS_Store, Thumbs.db, desktop.ini).")
    estimate: CaseEstimate | None = Field(None, description="Repair estimate of the findings (cost table rules, "
                                          "low-high ranges); None when it was not made.")
    reuse: list[ReuseMatch] | None = Field(None, description="Photos of this case matching a photo of another "
                                           "indexed case or another photo of this case (perceptual hashes); None "
                                           "when the reused-photo check did not run.")

    @model_validator(mode="before")
    @classmethod
    def _from_old_report(cls, data):
        """Schema <= 1.3: the verification threshold was part of the config."""
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            thr = data["config"].get("verification_threshold")
            if thr is not None and "model_thresholds" not in data:
                data = {**data, "model_thresholds": {"verification": thr}}
        return data
