"""Build the case report from plain schema objects: the summary counts, the one-line verdict for
a claims handler, and the :class:`~carcheck.schema.CaseReport` itself.

Nothing here runs a model or reads a photo: the pipeline passes its results in (per-photo
entries, reconciled findings, the stated config and model files, estimate and reused photos), and the
report is built once, complete. Writing it (report.json / report.html) is the callers' part
(:func:`carcheck.report.html.write_report`).
"""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Mapping, Sequence

from .. import __version__
from ..data.images import display_name
from .agreement import CaseFinding, PartCaseFinding
from .instances import attach_part_instances
from ..schema import (PRIVACY_NOTE, AssessConfig, CaseEstimate, CaseReport, CaseSummary, Consistency, Finding, ModelFile,
                      PartFinding, PhotoReport, ReuseMatch, VehicleIdentity)

__all__ = ["verdict_text", "summarize", "resolve_case_id", "build_report", "finding_of", "part_finding_of"]


def verdict_text(files: int, assessed: int, failed: int, findings: int, damaged_parts: int, for_review: int,
                 different_vehicle: int = 0, clean: int = 0, confident_parts: int | None = None,
                 parts_for_review: int | None = None) -> str:
    """The report's one-line outcome.

    Args:
        files: entries of the case; assessed / failed: how many were assessed / could not be read.
        findings, damaged_parts, for_review: reconciled findings, distinct damaged parts (not
            ``unassigned``), findings that need review.
        different_vehicle: photos flagged "different vehicle?"; clean: photos the damage filter
            confirmed clean.
        confident_parts, parts_for_review: per-part findings (schema >= 1.8) that are confident /
            need review; given, the verdict states the parts first.
    """
    if not files:
        verdict = "No photos were given."
    elif assessed == 0:
        verdict = "No photo could be assessed: see the per-photo reasons."
    elif not findings:
        verdict = f"No damage found on {assessed} assessed photo(s)."
    elif confident_parts is not None and parts_for_review is not None:
        verdict = (f"Damage on {confident_parts} part(s) with confidence; {parts_for_review} part(s) need human "
                   f"review ({findings} part/type finding(s)).")
    else:
        verdict = f"{findings} finding(s) on {damaged_parts} part(s); {for_review} need human review."
    if failed:
        verdict += f" {failed} file(s) could not be read."
    if different_vehicle:
        verdict += f" {different_vehicle} photo(s) may show a different vehicle."
    if clean:
        verdict += f" {clean} photo(s) confirmed clean by the damage filter."
    return verdict


def summarize(files: int, photos: Sequence[PhotoReport], findings: Sequence[Finding],
              consistency: Consistency | None = None, parts: Sequence[PartFinding] = ()) -> CaseSummary:
    """The case summary (counts and :func:`verdict_text`) of ``files`` entries (``parts``: the
    per-part findings, which the verdict states when there are any)."""
    n = {s: sum(p.status == s for p in photos) for s in ("assessed", "skipped", "failed")}
    damaged = sorted({f.part for f in findings if f.part != "unassigned"})
    review = sum(f.needs_review for f in findings)
    clean = sum(p.damage_filter is not None and p.damage_filter.verdict == "clean" for p in photos)
    different = len(consistency.different_vehicle) if consistency is not None else 0
    return CaseSummary(photos=files, assessed=n["assessed"], skipped=n["skipped"], failed=n["failed"],
                       findings=len(findings), findings_for_review=review, damaged_parts=damaged,
                       verdict=verdict_text(files, n["assessed"], n["failed"], len(findings), len(damaged), review,
                                            different, clean,
                                            sum(not p.needs_review for p in parts) if parts else None,
                                            sum(p.needs_review for p in parts) if parts else None))


def resolve_case_id(case_id: str | None) -> str:
    """The report's case id: ``case_id`` as printable text, or a random 12-hex-digit id."""
    return display_name(case_id) if case_id else uuid.uuid4().hex[:12]


def build_report(*, case_id: str | None, files: int, photos: list[PhotoReport], findings: list[Finding],
                 config: AssessConfig, models: Mapping[str, str], model_files: Sequence[ModelFile] = (),
                 model_thresholds: Mapping[str, float] | None = None, taxonomies: Mapping[str, str] | None = None,
                 vehicle: VehicleIdentity | None = None, consistency: Consistency | None = None,
                 ignored_files: Sequence[str] = (), parts: Sequence[PartFinding] = (),
                 estimate: CaseEstimate | None = None, reuse: list[ReuseMatch] | None = None) -> CaseReport:
    """The :class:`~carcheck.schema.CaseReport` of one case.

    Args:
        case_id: printable case id (None: a random 12-hex-digit id).
        files: entries of the case (assessed, skipped or failed).
        photos, findings: per-photo entries and reconciled findings.
        config: the config as used (``auto`` resolved), stated in full.
        models: role -> file / description (shown in the HTML header).
        model_files: every loaded model file with its SHA-256.
        model_thresholds: thresholds that come with a model file.
        taxonomies: task (``parts``, ``damage``) -> taxonomy name of the segmenter's heads.
        vehicle, consistency: the case's make/model and same-vehicle sections, if checked.
        ignored_files: printable names of the entries left out on purpose.
        parts: findings per physical part (:func:`~carcheck.pipeline.agreement.reconcile_parts`).
        estimate, reuse: the repair estimate and the reused-photo matches (None: not checked).
    The per-part findings get their damage instances from the photos' (:func:`~.instances.attach_part_instances`).
    """
    parts = list(parts)
    attach_part_instances(parts, photos)
    return CaseReport(
        case_id=resolve_case_id(case_id),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        carcheck_version=__version__, models=dict(models), config=config, model_files=list(model_files),
        model_thresholds=dict(model_thresholds or {}), taxonomies=dict(taxonomies or {}),
        summary=summarize(files, photos, findings, consistency, parts),
        findings=findings, parts=parts, photos=photos, vehicle=vehicle, consistency=consistency, privacy=PRIVACY_NOTE,
        ignored_files=list(ignored_files), estimate=estimate, reuse=reuse)


def finding_of(c: CaseFinding) -> Finding:
    """A reconciled finding as the report states it (fractions rounded to 4 decimals)."""
    return Finding(part=c.part, damage=c.damage, size_class=c.size_class, area_fraction_of_part=round(c.area_fraction, 4),
                   c_base=round(c.c_base, 4), k_agree=round(c.k_agree, 4), c_refined=round(c.c_refined, 4),
                   needs_review=c.needs_review, review_reasons=c.review_reasons, photos=c.photos)


def part_finding_of(p: PartCaseFinding) -> PartFinding:
    """A physical part's reconciled damage as the report states it (fractions rounded to 4 decimals)."""
    return PartFinding(part=p.part, damages=p.damages, c_base=round(p.c_base, 4), k_agree=round(p.k_agree, 4),
                       c_refined=round(p.c_refined, 4), views_damaged=p.views_damaged, views_visible=p.views_visible,
                       photos=p.photos, needs_review=p.needs_review, review_reasons=p.review_reasons,
                       p_damaged=p.p_damaged, features=p.features, grade=p.grade, grade_reason=p.grade_reason)
