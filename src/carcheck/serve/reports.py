"""The stored report of a case, read back as a :class:`~carcheck.schema.CaseReport`.

The worker stores the report of ``carcheck assess`` as JSON in ``cases.report_json``; every reader in the
service (the case API, compare, the review API and UI, the reviewed-data export, review statistics) goes
through :func:`stored_report`, so each sees the validated schema rather than a raw dict, and a stored report
this version cannot read is one clear error (:class:`StoredReportError`, HTTP 500 ``report_invalid``,
naming the case and the first problems) instead of a ``KeyError`` somewhere downstream.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..schema import SCHEMA_VERSION, CaseReport
from .errors import ApiError

__all__ = ["StoredReportError", "stored_report", "validate_stored_report"]

#: validation problems named in the message (all of them are in ``detail``)
_SHOWN = 3


class StoredReportError(ApiError, ValueError):
    """A case's stored report does not validate as :class:`~carcheck.schema.CaseReport` (written by
    another carcheck version, or changed in the database). Answers HTTP 500 ``report_invalid``; the
    detail lists every problem as ``{"loc": "photos[0].status", "msg": ...}``. A ``ValueError`` too, so
    ``carcheck export reviewed`` prints it and exits 2 like its other data errors.

    Attributes:
        case_id: the case's public id.
        problems: the validation problems, as in ``detail``.
    """

    def __init__(self, case_id: str, schema_version: Any, problems: list[dict]) -> None:
        shown = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems[:_SHOWN])
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        super().__init__(500, "report_invalid",
                         f"the stored report of case {case_id} (schema {schema_version}) is not a valid report of "
                         f"schema {SCHEMA_VERSION}: {shown}{more}",
                         {"case_id": case_id, "schema_version": schema_version, "problems": problems})
        self.case_id, self.problems = case_id, problems


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def validate_stored_report(case_id: str, data: Any) -> CaseReport:
    """``data`` (a stored report JSON) as a :class:`~carcheck.schema.CaseReport`.

    Raises:
        StoredReportError: ``data`` is not a valid report (names ``case_id`` and the problems).
    """
    try:
        return CaseReport.model_validate(data)
    except ValidationError as e:
        problems = [{"loc": _loc(err["loc"]), "msg": err["msg"]} for err in e.errors(include_url=False)]
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise StoredReportError(case_id, version, problems) from None


def stored_report(case) -> CaseReport | None:
    """The current report of ``case`` (a :class:`~carcheck.serve.db.models.Case`), validated; None when it
    has none (not assessed yet). Validated once per case object and report (cached on the object).

    Raises:
        StoredReportError: the stored JSON is not a valid report.
    """
    data = case.report_json
    if data is None:
        return None
    cached = case.__dict__.get("_carcheck_report")
    if cached is not None and cached[0] is data:
        return cached[1]
    report = validate_stored_report(case.public_id, data)
    case.__dict__["_carcheck_report"] = (data, report)
    return report
