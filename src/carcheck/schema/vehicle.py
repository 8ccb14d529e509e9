"""What the case's photos say about the car in text: its VIN and its odometer reading (schema 1.11, issue 30).

Both are read by OCR (:mod:`carcheck.models.ocr`) only on photos the photo-type head types
``vin_dashboard`` (VIN plate / odometer / dashboard close-up) or ``document`` (the odometer on
``vin_dashboard`` photos only); the rules are :mod:`carcheck.pipeline.vin` and
:mod:`carcheck.pipeline.odometer`. They are optional fields of
:class:`~carcheck.schema.report.VehicleIdentity` (``vehicle.vin``, ``vehicle.odometer``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["VinReading", "OdometerReading", "PlateReading"]


class VinReading(BaseModel):
    """The vehicle identification number read in a photo (ISO 3779: 17 characters, no I / O / Q)."""

    text: str = Field(description="The characters read, after fixing the OCR confusions a VIN cannot hold "
                                  "(O, Q -> 0; I -> 1); 17 characters when complete, fewer for a partial read.")
    complete: bool = Field(description="True: all 17 characters were read; False: a partial read (the start of a "
                                       "VIN, anchored on a known WMI), e.g. the rest hidden or illegible.")
    check_digit_valid: bool | None = Field(None, description="Position 9 against the 49 CFR 565 check digit: True / "
                                           "False for a complete North-American VIN (first character 1-5); True for "
                                           "another complete VIN whose digit holds; None where the rule does not "
                                           "apply (partial read, or a non-North-American VIN whose digit does not "
                                           "hold).")
    wmi: str | None = Field(None, description="World Manufacturer Identifier: the first 3 characters (ISO 3780).")
    manufacturer: str | None = Field(None, description="Who the WMI belongs to, from the declared table "
                                     "carcheck/pipeline/wmi.yaml (source stated there); None when not listed.")
    photo: str | None = Field(None, description="The photo the VIN was read from.")
    agrees_with_make_model: bool | None = Field(None, description="Does the WMI's manufacturer make the make/model "
                                                "head's top make? None when either is unknown (WMI not in the "
                                                "table, no make/model head, or the car is not one of its known "
                                                "models).")


class OdometerReading(BaseModel):
    """The total distance shown by the odometer in a dashboard photo."""

    value: int = Field(description="The odometer's total distance, in ``unit``.", ge=0)
    unit: Literal["km", "mi", "unknown"] = Field(description="km or mi when a unit was read beside the value or on "
                                                 "the speedometer (km/h or mph, not both); else unknown.")
    photo: str | None = Field(None, description="The photo the reading comes from.")
    confidence: float = Field(description="The OCR recogniser's score of the line the value was read from "
                                          "(fraction), halved when no ODO / km / mi label was read next to it.",
                              ge=0, le=1)


class PlateReading(BaseModel):
    """The licence plate read on an exterior photo (schema >= 1.12), masked: plate text is personal data, the report
    never holds it whole (:mod:`carcheck.pipeline.plate`)."""

    masked: str = Field(description="The plate's letters and digits with all but the last three replaced by '•' "
                                    "(e.g. '•••WHV').")
    confidence: float = Field(description="The OCR recogniser's score of the plate line (fraction).", ge=0, le=1)
    agrees_with_case: bool | None = Field(None, description="True: the case's plate (read on at least two photos, "
                                          "at most one character apart); False: another plate (2+ characters apart), "
                                          "so the photo is flagged as a different vehicle; None: nothing to compare "
                                          "against.")
