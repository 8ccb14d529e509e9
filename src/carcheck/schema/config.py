"""Every config of the assessment: ``AssessConfig`` and its parts (fusion, photo type, quality, size).

Part of the contract (:mod:`carcheck.schema`): pydantic models, validated and serialisable; a report states
the ``AssessConfig`` it ran with in full (``CaseReport.config``). The rules that read them live in
:mod:`carcheck.pipeline` (fusion, photo_type, quality, size, gate).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AssessConfig", "AssessConfigModel", "FusionConfig", "PhotoTypeConfig", "QualityConfig", "SizeConfig"]


class PhotoTypeConfig(BaseModel):
    """Thresholds of the photo-type rule."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float = Field(0.85, gt=0, le=1, description="winning probability below which the type is "
                                                                 "uncertain (flagged for review)")
    search_if_exterior_at_least: float = Field(0.0, ge=0, le=1, description="an uncertain photo whose exterior "
                                                                              "probability reaches this is still "
                                                                              "searched for exterior damage")
    search_if_damage_aware_exterior_at_least: float | None = Field(
        0.9, ge=0, le=1, description="a photo the photo-type head leaves out of the damage search is searched "
                                     "anyway when the damage-aware photo-type head (trained with damaged cars) "
                                     "gives P(exterior) >= this; None: that head is not consulted (issue 26)")


class QualityConfig(BaseModel):
    """Thresholds of the capture-quality checks. Defaults: the values bench/calibration/quality.py calibrated (each check
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


class SizeConfig(BaseModel):
    """When a damage size in cm is estimated (:mod:`carcheck.pipeline.size`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_part_px: int = Field(20, ge=1, description="No estimate when the part spans fewer px than this along either "
                             "axis at network resolution (too small to scale from).")
    min_visible_fraction: float = Field(0.6, gt=0, le=1, description="No estimate when less than this share of the "
                                        "part's extent is inside the photo (cut off; the scale would come from a "
                                        "guess of the missing part).")
    min_instance_share: float = Field(0.02, ge=0, lt=1, description="Part fragments smaller than this share of the "
                                      "part's pixels are left out of its extent (segmentation specks).")


class FusionConfig(BaseModel):
    """Thresholds of the fusion step (Ma et al. II-D-1/2; all fractions of the photo unless stated)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_region_fraction: float = Field(0.0005, ge=0, le=1, description="D_k smaller than this fraction of the image "
                                       "are dropped (noise).")
    visible_part_fraction: float = Field(0.005, ge=0, le=1, description="A part counts as visible when it covers at "
                                         "least this fraction of the image.")
    closeup_max_parts: int = Field(2, ge=0, description="A photo with at most this many visible parts is a close-up "
                                   "(II-D-2's distance surrogate); more is a full view.")
    size_thresholds: tuple[float, float] = Field((0.05, 0.25), description="(small/medium, medium/large) cut-offs of "
                                                 "the fraction of the part covered by the damage.")
    closeup_scale: float = Field(1.0, gt=0, description="For a close-up the covered fraction is divided by this "
                                 "first (a close-up magnifies damage relative to the part).")
    plausibility: Literal["reassign", "flag", "off"] = Field(
        "reassign", description="An implausible (part, damage) pair (taxonomy PLAUSIBLE_DAMAGE, e.g. a flat tyre on "
        "a door): 'reassign' moves it to the plausible part touching the region (else flags it for review), "
        "'flag' only flags it, 'off' keeps it as segmented.")
    end_dominance: float | None = Field(10.0, gt=1.0, description="One end of the car per photo "
                                        "(pipeline/part_ends.py): when rear parts cover more than this many times "
                                        "the pixels of front parts (or the reverse), the minority end's labels become "
                                        "their counterparts before the fusion; chosen on car_parts/trainingset "
                                        "(bench/calibration/part_ends.py: 5 for the frozen part model, 10 for the fine-tuned one "
                                        "shipped since). None: off.")
    door_end_min_share: float | None = Field(0.05, gt=0, le=1, description="Door-anchored ends "
                                             "(pipeline/part_ends.py door_anchored_ends), before the one-end rule: "
                                             "a front-end region whose nearest door is mostly a back door becomes the "
                                             "rear counterparts (a torn tailgate read as 'hood') and the reverse, when "
                                             "back doors cover at least this fraction of the vehicle's pixels; chosen "
                                             "on car_parts/trainingset (bench/studies/door_ends.py). None: off.")
    door_end_max_distance: float = Field(0.35, gt=0, description="Door-anchored ends: only pixels within this "
                                         "fraction of the map's longest side of a door vote on their region's end.")
    plausibility_dilation_px: int = Field(3, ge=0, description="Neighbouring parts are those within this many px "
                                          "(network resolution) of the region (dilation).")
    unassigned_min_part_probability: float | None = Field(
        None, ge=0, le=1, description="Damage on pixels the part map calls background (a crushed or torn panel "
        "is often no part at all to the part model) goes to the most probable part there when that part's "
        "probability reaches this (issue 26, item 5); None: it stays 'unassigned'.")
    instance_split_core_fraction: float | None = Field(
        0.5, gt=0, le=1, description="Damage instances (schema 1.14, pipeline/instances.py): a component of a type in "
        "instance_split_types whose thick parts (distance from its edge >= this x its largest) are separate is split "
        "there, so two touching dents are two instances; chosen on CarDD valid by mask AP "
        "(bench/studies/instance_split.py: dents only at 0.5, 0.2639 vs 0.2635 unsplit; splitting scratches too "
        "lowered it). None: never split.")
    instance_split_types: tuple[str, ...] = Field(("dent",), description="Damage types whose instances are split "
                                                  "at their necks (see instance_split_core_fraction).")
    missed_damage_filter_at_least: float | None = Field(
        0.9, ge=0, le=1, description="A second look where the segmenter finds no damage on a photo but the damage "
        "filter (the damaged / undamaged image classifier, CarDD section V-G) gives P(damaged) at least this on a photo "
        "the photo-type head calls an exterior view: the "
        "damage map is read again at missed_damage_min_probability instead of its argmax, and what it finds is "
        "reported for review (issue 26; bench/studies/second_look.py: FFI damaged claim photos without a finding "
        "0.367 -> 0.291, undamaged ones with a finding 25 -> 27 of 99; the dev cases' confident numbers unchanged, "
        "their clean parts reported for review 0.041 -> 0.054). None: off.")
    missed_damage_min_probability: float = Field(0.3, gt=0, lt=1, description="The second look's threshold on "
                                                 "P(any damage) = 1 - P(no damage) per pixel (the argmax needs "
                                                 "P(no damage) below every damage class's).")
    missed_damage_longest_side: int | None = Field(
        1024, gt=0, description="The second look first runs the backbone and the damage decoder again at this longer "
        "side, px (damage small in a full view is closer in scale to CarDD's close-ups), and reads that map's argmax "
        "(brought to network resolution); only where it finds nothing is the map read at "
        "missed_damage_min_probability. A part only second looks show goes to review, and a second look adds views to "
        "K_agree but never a higher C_base (issue 26, bench/results/cases_second_look_hires_issue26.json: damaged "
        "groups found at all, dev 1 -> 2 of 7, extra damaged cases 2 -> 6 of 17; clean parts for review 0.054 -> "
        "0.061). None: off.")


class AssessConfig(BaseModel):
    """Every setting of the assessment: the one config, stated in full in each report.

    The report states it with ``precision``, ``engine`` and ``threads`` as actually used (``auto``
    resolved), so the same config reproduces the run. Thresholds that come with a model file (the
    same-vehicle distance, the make/model OOD threshold of the precision used) are stated beside it,
    in :attr:`CaseReport.model_thresholds`, and the files with their SHA-256 in
    :attr:`CaseReport.model_files`.
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    vehicle_threshold: float = Field(0.035, ge=0, le=1, description="Fallback presence gate (no presence head): "
                                     "summed ImageNet vehicle-class probability; chosen by bench/calibration/gate_threshold.py "
                                     "(balanced accuracy on coco128 + car photos at 512 px).")
    part_coverage_threshold: float = Field(0.25, ge=0, le=1, description="OR-ed fallback rule: fraction of the photo "
                                           "labelled as car parts (ImageNet classes miss close-ups of a panel; the "
                                           "part head sees them). Same bench.")
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    photo_type: PhotoTypeConfig = Field(default_factory=PhotoTypeConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    size: SizeConfig = Field(default_factory=SizeConfig)
    review_threshold: float = Field(0.5, ge=0, le=1, description="Findings with C_refined below this go to review.")
    longest_side: int = Field(512, gt=0, description="Network input size of the longer side, px (the paper's 512).")
    min_side: int = Field(64, ge=1, description="Photos with a shorter side below this many px are skipped as too "
                          "small to judge (a 32x32 thumbnail upscaled to 512 px got 10 damage detections).")
    max_decoded_pixels: int = Field(8_000_000, gt=0, description="Larger photos are decoded at reduced size (JPEG: "
                                    "DCT scaling); sizes and areas stay in the photo's own pixels.")
    blank_max_std: float = Field(3.0, ge=0, description="A photo whose grey levels (0-255) have a standard deviation "
                                 "below this is blank / near-constant (real photos measured >= 15.8).")
    blank_max_range: float = Field(8.0, ge=0, description="... or whose 1st-99th percentile range is below this "
                                   "many levels (real photos >= 74).")
    duplicate_max_distance: int = Field(8, ge=0, le=64, description="Near duplicates: both 64-bit pHash and dHash "
                                        "within this many bits (distinct photos measured >= 19, re-encodes <= 5).")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: fp32 when the engine resolves to "
                                                       "ONNX Runtime (engine auto, onnxruntime installed), else bf16 "
                                                       "only on CUDA or a CPU with native bf16, else fp32; a report "
                                                       "states the one used.")
    engine: Literal["auto", "torch", "onnx"] = Field("auto", description="auto: ONNX Runtime in fp32 where "
                                                     "onnxruntime is installed (measured never slower than torch "
                                                     "bf16), else eager torch.")
    threads: int | None = Field(None, ge=1, description="Torch threads (None: every core); a report states the "
                                "number used.")
    presence_threshold: float = Field(0.5, ge=0, le=1, description="P(vehicle) of the presence head below which a "
                                      "photo is out of scope.")
    clean_threshold: float = Field(0.9, ge=0, le=1, description="Damage filter: P(undamaged) above which a photo "
                                   "without segmented damage is clean and one with segmented damage is flagged "
                                   "(CarDD V-G uses 0.9).")
    damaged_threshold: float = Field(0.9, ge=0, le=1, description="Damage filter: P(damaged) above which a photo "
                                     "without segmented damage is flagged.")
    severity_min_p_damaged: float = Field(0.5, ge=0, le=1, description="Severity gate: a grade is reported for a "
                                          "photo with segmented damage, or with P(damaged) above this.")
    gradcam: bool = Field(True, description="Grad-CAM maps of the damage filter for flagged photos (HTML report).")
    plate_text: bool = Field(True, description="Read the licence plates the privacy head finds on exterior photos "
                             "(OCR, a median 33 ms per plate region read, bench/accuracy/plates.py) and let plate "
                             "agreement decide the same-vehicle check (schema >= 1.12).")

    @model_validator(mode="before")
    @classmethod
    def _from_old_report(cls, data):
        """Read the flat config of schema <= 1.3 reports (``longest_side_px``, fusion fields at the top)."""
        if isinstance(data, dict) and ("longest_side_px" in data or "min_region_fraction" in data):
            data = dict(data)
            fusion = {k: data.pop(k) for k in ("min_region_fraction", "visible_part_fraction", "closeup_max_parts",
                                               "size_thresholds") if k in data}
            data.setdefault("fusion", fusion)
            if "longest_side_px" in data:
                data["longest_side"] = data.pop("longest_side_px")
            data.pop("verification_threshold", None)  # now in CaseReport.model_thresholds
            data = {k: v for k, v in data.items() if v is not None or k == "threads"}
        return data


#: The name reports of schema <= 1.3 used for the stated config.
AssessConfigModel = AssessConfig
