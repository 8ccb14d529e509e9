"""The contract every layer speaks, at the bottom of the import chain (it imports nothing of carcheck).

- :mod:`.config`: ``AssessConfig`` and its parts (fusion, photo type, quality, size): every setting of an
  assessment, stated in full in each report.
- :mod:`.report`: the versioned case report (``CaseReport``, per-photo entries, findings, parts, vehicle).
- :mod:`.photo`: photo type and capture-quality results.
- :mod:`.claims`: repair estimate, before/after comparison, reused photos.

Import from here (``from carcheck.schema import AssessConfig, CaseReport``) or from the submodule; the
pipeline, report, batch, serve and CLI layers re-export none of these names.
"""

from .claims import (ESTIMATE_STATEMENT, CaseEstimate, CompareReport, CompareSide, EstimateLine, PartComparison,
                     ReuseMatch, SameVehicleCheck)
from .config import AssessConfig, AssessConfigModel, FusionConfig, PhotoTypeConfig, QualityConfig, SizeConfig
from .photo import ISSUE_KINDS, PHOTO_TYPES, PhotoTypeDecision, QualityIssue, QualityMeasures, QualityResult
from .report import (PRIVACY_NOTE, SCHEMA_VERSION, CaseReport, CaseSummary, ClassScore, Consistency, DamageFilter,
                     DamageInstance,
                     Finding, HeadResult, ModelFile, PartFinding, PhotoDetection, PhotoReport, SizeCm, VehicleIdentity,
                     VehicleMatch)

__all__ = ["ESTIMATE_STATEMENT", "CaseEstimate", "CompareReport", "CompareSide", "EstimateLine", "PartComparison",
           "ReuseMatch", "SameVehicleCheck", "AssessConfig", "AssessConfigModel", "FusionConfig", "PhotoTypeConfig",
           "QualityConfig", "SizeConfig", "ISSUE_KINDS", "PHOTO_TYPES", "PhotoTypeDecision", "QualityIssue",
           "QualityMeasures", "QualityResult", "PRIVACY_NOTE", "SCHEMA_VERSION", "CaseReport", "CaseSummary",
           "ClassScore",
           "Consistency", "DamageFilter", "DamageInstance", "Finding", "HeadResult", "ModelFile", "PartFinding", "PhotoDetection",
           "PhotoReport", "SizeCm", "VehicleIdentity", "VehicleMatch"]
