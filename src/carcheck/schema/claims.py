"""Report objects of the claims features (issue 19): repair estimate, before/after comparison, reused photos.

They are part of the contract (:mod:`carcheck.schema`: pipeline, report and service speak them). Money is in the
cost table's currency; every range is ``low <= high``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["ESTIMATE_STATEMENT", "EstimateLine", "CaseEstimate", "PartComparison", "SameVehicleCheck",
           "CompareSide", "CompareReport", "ReuseMatch"]

#: What every estimate says about itself (the cost table may replace it with its own wording).
ESTIMATE_STATEMENT = ("This is an automatic estimate from photos, not a repair quote: it prices each finding with a "
                      "declared rule table (operation, labour hours x rate, paint, part) and gives a low-high range. "
                      "Hidden damage, local prices and the repairer's assessment can change it.")

Operation = Literal["repair", "paintless dent repair", "paint", "replace"]


class EstimateLine(BaseModel):
    """The price of one finding (one part x damage type)."""

    part: str
    damage: str
    size_class: str
    operation: Operation
    rule: str = Field(description="Id of the cost-table rule that produced the line.")
    labour_hours: tuple[float, float] = Field(description="Low-high labour hours.")
    labour: tuple[float, float] = Field(description="Low-high labour cost (hours x rate x class factor x scale).")
    paint: tuple[float, float] = Field(description="Low-high paint and materials cost.")
    parts: tuple[float, float] = Field(description="Low-high new-part cost (0 unless the operation replaces a part).")
    total: tuple[float, float] = Field(description="Low-high line total (0 when included in another line).")
    included_in: str | None = Field(None, description="Rule id of a larger operation on the same part that already "
                                                      "covers this work (the line then adds nothing).")
    needs_review: bool = Field(False, description="The finding itself needs human review.")
    photos: list[str] = []


class CaseEstimate(BaseModel):
    """The repair estimate of a case: one line per finding, the case total, and how it was made."""

    currency: str
    vehicle_class: str
    vehicle_class_source: str = Field(description="Why this class: the make the report identified, a caller's "
                                                  "override, or the table's default when the car is out of scope.")
    lines: list[EstimateLine]
    total: tuple[float, float] = Field(description="Low-high case total.")
    midpoint: float = Field(description="(low + high) / 2 of the total.")
    lines_for_review: int = Field(description="Lines whose finding needs review (their price is as doubtful).")
    cost_table: str = Field(description="The table used: 'default' or the file given, and its version.")
    statement: str = ESTIMATE_STATEMENT


class PartComparison(BaseModel):
    """One part across the two cases (before = pickup, after = return)."""

    part: str
    status: Literal["new", "pre-existing", "changed", "not comparable", "clean"]
    before: list[str] = Field([], description="Damage findings on the part before, as 'type (size)'.")
    after: list[str] = Field([], description="Damage findings on the part after, as 'type (size)'.")
    reason: str = Field(description="Why this status, in words (e.g. 'not visible in any photo before').")
    before_photos: list[str] = Field([], description="Photos of the before case that show the part or its damage.")
    after_photos: list[str] = Field([], description="Photos of the after case that show the part or its damage.")
    needs_review: bool = Field(False, description="A finding behind this status needs review in its own report.")


class SameVehicleCheck(BaseModel):
    """Do the two cases show the same car?"""

    verdict: Literal["same vehicle", "different vehicle?", "unknown"]
    method: str = Field(description="What the verdict rests on: verification embeddings (distance between the two "
                                    "cases' photos) or the make/model the two reports identified.")
    distance: float | None = Field(None, description="Median cross-case verification distance (embeddings only).")
    threshold: float | None = None
    before_make_model: str | None = None
    after_make_model: str | None = None
    note: str = ""


class CompareSide(BaseModel):
    case_id: str
    source: str = Field(description="The folder of photos or the report.json the side came from.")
    photos: int
    assessed: int


class CompareReport(BaseModel):
    """``carcheck compare BEFORE AFTER``: every part classified, and the same-car check."""

    schema_version: str = "1.0"
    created: str
    before: CompareSide
    after: CompareSide
    parts: list[PartComparison]
    same_vehicle: SameVehicleCheck
    new_damage: list[str] = Field(description="Parts with new damage (status 'new').")
    changed: list[str] = Field(description="Parts whose damage grew or changed type.")
    not_comparable: list[str] = Field(description="Parts damaged in one case but not visible in the other.")
    verdict: str


class ReuseMatch(BaseModel):
    """A photo of this case matching a photo already indexed (another case, or this one)."""

    photo: str
    case_id: str = Field(description="The case the matching photo belongs to.")
    matched_photo: str
    distance: int = Field(description="Hamming distance of the matching pHashes (bits of 256).")
    how: str = Field(description="Which variant matched: full photo, cropped window, mirrored.")
    same_case: bool
