"""VIN and odometer of a case from its photos' text (issue 30 item 2): the step the assessment calls.

OCR (:mod:`carcheck.models.ocr`) runs only on photos the photo-type head typed ``vin_dashboard`` (VIN
plate / odometer / dashboard close-up) or ``document``: exterior and interior photos never pay for it, so
a typical case stays as fast as before. The VIN rules are :mod:`.vin` (on both types), the odometer rules
:mod:`.odometer` (on ``vin_dashboard`` photos only). The result goes into the case's ``vehicle`` section
(created, with empty make/model lists, when there is no make/model head), and a VIN whose manufacturer disagrees with the
make/model head's top make puts a review reason on the VIN photo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..schema import PhotoReport, VehicleIdentity
from ..schema.vehicle import OdometerReading, VinReading
from .odometer import best_odometer, find_odometer
from .vin import agrees_with_make, best_vin, find_vin

__all__ = ["OCR_TYPES", "ODOMETER_TYPES", "read_photo_text", "vehicle_text", "vin_disagreement_reason"]

#: photo types OCR runs on
OCR_TYPES = ("vin_dashboard", "document")
#: photo types the odometer is looked for on
ODOMETER_TYPES = ("vin_dashboard",)


def read_photo_text(image: np.ndarray, name: str, photo_type: str, ocr: Callable | None = None
                    ) -> tuple[tuple[VinReading, float] | None, OdometerReading | None]:
    """OCR one photo and apply the VIN (and, on a dashboard photo, the odometer) rules.

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        name: the photo's name in the report.
        photo_type: its photo type (one of :data:`OCR_TYPES`).
        ocr: ``image -> [TextLine]`` (default :func:`carcheck.models.ocr.read_text`).
    Returns:
        ``((vin, ocr score) | None, odometer | None)``.
    """
    if ocr is None:
        from ..models.ocr import read_text as ocr
    lines = ocr(image)
    vin = find_vin([(ln.text, ln.score) for ln in lines], photo=name)
    odo = find_odometer(lines, photo=name) if photo_type in ODOMETER_TYPES else None
    return vin, odo


def vin_disagreement_reason(vin: VinReading, top_make: str) -> str:
    """The review reason of a VIN whose manufacturer does not make the make/model head's top make."""
    return (f"VIN {vin.text} (WMI {vin.wmi}: {vin.manufacturer}) disagrees with make/model ({top_make}): "
            f"check the car's identity")


def vehicle_text(photos: Sequence[PhotoReport], files: Sequence[Path], load: Callable[[Path], object],
                 vehicle: VehicleIdentity | None, ocr: Callable | None = None) -> VehicleIdentity | None:
    """The case's vehicle section with the VIN and odometer its photos show (see the module doc).

    Call it after the photos' review reasons are set (it adds the VIN-disagreement reason to the VIN photo).

    Args:
        photos: the case's per-file entries, one per file of ``files``, in order.
        files: the case's files.
        load: ``path -> RGB uint8 array``, or an object with ``.array`` (a decoded image), or anything else
            for a file that cannot be read (skipped).
        vehicle: the make/model section (None without a make/model head); updated in place.
        ocr: ``image -> [TextLine]`` (default :func:`carcheck.models.ocr.read_text`).
    Returns:
        ``vehicle`` with ``vin`` / ``odometer`` set; a new section (empty make/model lists, ``known_models``
        0) when ``vehicle`` was None and something was read; None when it was None and nothing was read.
    """
    vins: list[tuple[VinReading, float]] = []
    odos: list[OdometerReading] = []
    for photo, path in zip(photos, files):
        ptype = photo.photo_type.type if photo.photo_type is not None else None
        if ptype not in OCR_TYPES or photo.status == "failed":
            continue
        image = load(path)
        image = getattr(image, "array", image)
        if not isinstance(image, np.ndarray):
            continue
        vin, odo = read_photo_text(image, photo.path, ptype, ocr)
        if vin is not None:
            vins.append(vin)
        if odo is not None:
            odos.append(odo)
    vin, odo = best_vin(vins), best_odometer(odos)
    if vin is None and odo is None:
        return vehicle
    v = vehicle
    if v is None:
        v = VehicleIdentity(make_model_top3=[], make_top3=[], in_scope=False, known_models=0)
    top_make = v.make_top3[0].label if v.in_scope and v.make_top3 else None
    if vin is not None:
        vin.agrees_with_make_model = agrees_with_make(vin, top_make)
        if vin.agrees_with_make_model is False:
            reason = vin_disagreement_reason(vin, top_make)
            for p in photos:
                if p.path == vin.photo and reason not in p.review_reasons:
                    p.review_reasons.append(reason)
    v.vin, v.odometer = vin, odo
    return v
