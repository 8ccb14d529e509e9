"""The service's reused-photo index (issue 19): the ``photo_hashes`` table as a
:class:`~carcheck.pipeline.reuse.HashStore` of one tenant.

The matching itself is :class:`carcheck.pipeline.reuse.ReuseIndex`, the same code the CLI's
``carcheck assess --index FILE`` (:class:`~carcheck.pipeline.reuse.SQLiteHashStore`) runs; both stores keep
the rows of :meth:`~carcheck.pipeline.reuse.HashEntry.row`. Only the store differs: here a SQLAlchemy table
(SQLite and PostgreSQL alike), every row carrying its tenant.

Matching is within one tenant only: a store reads and writes the rows of its tenant and no other. A match is
reported with the other case's id, so matching across tenants would tell one customer the case ids (and the
fact of a claim) of another; a photo reused between two insurers' claims is not flagged here.

Each worker job builds a new :class:`ReuseIndex` over :func:`tenant_reuse_index` (the index caches the rows it
read, and other workers write the table between jobs). The pipeline checks a case's photos against the rows
committed at that moment and then indexes them; two cases of one tenant assessed at the same moment by two
workers would miss each other, so the worker checks once more after indexing (:func:`with_late_matches`):
of two cases indexed one after the other, the later one's second check sees the earlier.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ..pipeline.reuse import HASH_SIZE, HashEntry, MemoryHashStore, ReuseIndex
from ..schema import CaseReport
from .db.models import Case, PhotoHash, utcnow

__all__ = ["TenantHashStore", "tenant_reuse_index", "with_late_matches"]


class TenantHashStore:
    """A :class:`~carcheck.pipeline.reuse.HashStore` over the service database's ``photo_hashes`` rows of
    one tenant. Entries name cases by their public id (``case_…``, what reports and the API call a case);
    each call is one transaction.

    Args:
        sessions: a session factory of the service database.
        tenant_id: the tenant (``tenants.id``) whose rows this store sees; never any other's.
    """

    def __init__(self, sessions: sessionmaker[Session], tenant_id: int) -> None:
        self.sessions = sessions
        self.tenant_id = tenant_id

    def _case_ids(self, s: Session, public_ids: set[str]) -> dict[str, int]:
        rows = s.execute(select(Case.public_id, Case.id).where(Case.public_id.in_(public_ids),
                                                               Case.tenant_id == self.tenant_id)).all()
        found = {p: i for p, i in rows}
        missing = sorted(public_ids - set(found))
        if missing:
            raise ValueError(f"reuse index: case(s) {', '.join(missing)} are not cases of tenant {self.tenant_id}")
        return found

    def add(self, entries: Sequence[HashEntry]) -> None:
        """Store entries, replacing a photo already stored for the same case.

        Raises:
            ValueError: an entry's case is not a case of this tenant (nothing is written).
        """
        if not entries:
            return
        with self.sessions() as s:
            ids = self._case_ids(s, {e.case_id for e in entries})
            for cid in {ids[e.case_id] for e in entries}:
                names = [e.photo for e in entries if ids[e.case_id] == cid]
                s.execute(delete(PhotoHash).where(PhotoHash.case_id == cid, PhotoHash.photo.in_(names)))
            now = utcnow()
            for e in entries:
                row = e.row()
                row["case_id"] = ids[e.case_id]
                s.add(PhotoHash(tenant_id=self.tenant_id, added=now, **row))
            s.commit()

    def remove_case(self, case_id: str) -> None:
        """Forget every photo of the tenant's case ``case_id`` (a public id; another tenant's: nothing)."""
        with self.sessions() as s:
            own = select(Case.id).where(Case.public_id == case_id, Case.tenant_id == self.tenant_id)
            s.execute(delete(PhotoHash).where(PhotoHash.tenant_id == self.tenant_id, PhotoHash.case_id.in_(own)))
            s.commit()

    def entries(self) -> Iterable[HashEntry]:
        """Every stored photo of this tenant (of the current hash size), oldest first."""
        with self.sessions() as s:
            rows = s.execute(
                select(Case.public_id, PhotoHash.photo, PhotoHash.aspect, PhotoHash.sha256, PhotoHash.hashes)
                .join(Case, Case.id == PhotoHash.case_id)
                .where(PhotoHash.tenant_id == self.tenant_id, Case.tenant_id == self.tenant_id,
                       PhotoHash.hash_size == HASH_SIZE)
                .order_by(PhotoHash.id)).all()
        return [HashEntry.from_row(*r) for r in rows]


def tenant_reuse_index(sessions: sessionmaker[Session], tenant_id: int, **kw) -> ReuseIndex:
    """A new :class:`~carcheck.pipeline.reuse.ReuseIndex` over the tenant's rows (``kw``: its thresholds).
    Build one per job: it caches what it read."""
    return ReuseIndex(TenantHashStore(sessions, tenant_id), **kw)


def with_late_matches(index: ReuseIndex, report: CaseReport) -> CaseReport:
    """After the case is indexed: match its photos, as stored, against every other case of the tenant
    stored now, and state what the pipeline's check (before indexing) could not see yet, i.e. cases
    indexed by another worker meanwhile: ``reuse`` entries and the photos' review reasons
    (:func:`carcheck.pipeline.review.reused_photo_reason`, the pipeline's wording).

    Args:
        index: the job's index (its store a :class:`TenantHashStore`; its thresholds are used).
        report: the case's :class:`~carcheck.schema.CaseReport` as the pipeline built it (not changed: a
            built report is never edited).
    Returns:
        ``report`` itself when there is nothing to add (usually), else a new report with the late matches
        appended to ``reuse`` and their reasons to the photos'.
    """
    from ..pipeline.review import reused_photo_reason

    if report.reuse is None:  # the check did not run
        return report
    entries = list(index.store.entries())  # one read of the tenant's rows, this case's included
    own = [(e.photo, e.hashes) for e in entries if e.case_id == report.case_id]
    others = MemoryHashStore()
    others.add([e for e in entries if e.case_id != report.case_id])
    known = {(m.photo, m.case_id, m.matched_photo) for m in report.reuse}
    late = [m for m in ReuseIndex(others, index.max_phash, index.max_dhash).check_case(report.case_id, own)
            if not m.same_case and (m.photo, m.case_id, m.matched_photo) not in known]
    if not late:
        return report
    reasons: dict[str, list[str]] = {}
    for m in late:
        reasons.setdefault(m.photo, []).append(reused_photo_reason(m))
    photos = [p.model_copy(update={"review_reasons": [*p.review_reasons, *(
        r for r in dict.fromkeys(reasons[p.path]) if r not in p.review_reasons)]}) if p.path in reasons else p
        for p in report.photos]
    return report.model_copy(update={"reuse": [*report.reuse, *late], "photos": photos})
