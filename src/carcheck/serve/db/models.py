"""SQLAlchemy 2 models of the service database (the contract of migrations/versions/).

Every table has an integer primary key ``id``; resources shown over the API also have a
``public_id`` (random, URL-safe, what the API calls ``id``). Times are timezone-aware UTC.

Tables:
    tenants, api_keys: who may call the API (keys stored as SHA-256 of a 256-bit random secret).
    cases: one claim / inspection; ``status`` open|queued|running|assessed|failed; the latest
        report (the ``carcheck assess`` JSON) in ``report_json``, its HTML on disk.
    photos: one uploaded file per row: ``stored`` (content-addressed by ``sha256``) or
        ``rejected`` with the reason.
    jobs: the durable queue (see :mod:`carcheck.serve.jobs`): a lease (``lease_token``,
        ``lease_expires_at``) is what a worker holds while it runs a job; at most one active
        (queued or running) job per case, enforced by a partial unique index.
    findings: the findings of the case's current report, one row each, with ``review_state``
        (pending|confirmed|rejected|edited; issue 18 adds reviewer decisions beside it).
    audit_events: append-only log (never updated or deleted by the service).
    photo_hashes: the reused-photo index (issue 19): perceptual hashes of every assessed photo, by
        tenant (see :mod:`carcheck.serve.reuse_index`).
    login_failures: failed logins of the review UI in the throttling window (issue 28), by account
        e-mail and client address; rows older than the window are deleted as new ones arrive.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        String, Text, UniqueConstraint, text)
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "Tenant", "ApiKey", "Case", "Photo", "Job", "Finding", "AuditEvent", "PhotoHash", "LoginFailure",
           "utcnow", "new_public_id",
           "CASE_STATUSES", "JOB_STATUSES", "REVIEW_STATES"]

CASE_STATUSES = ("open", "queued", "running", "assessed", "failed")
JOB_STATUSES = ("queued", "running", "done", "failed")
REVIEW_STATES = ("pending", "confirmed", "rejected", "edited")

#: constraint names stable across SQLite and PostgreSQL (Alembic needs them to alter tables)
NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
          "pk": "pk_%(table_name)s"}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC ``datetime`` on every database (SQLite stores it naive; it is marked UTC
    on the way out, and aware values are converted to UTC on the way in)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def new_public_id(prefix: str) -> str:
    """A random public id such as ``case_3fa2...`` (prefix + 20 hex digits, 80 random bits)."""
    return f"{prefix}_{secrets.token_hex(10)}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: the HMAC-SHA256 key that signs the tenant's callbacks (``whsec_...``; made on first use, see
    #: :mod:`carcheck.serve.callbacks`); the database holds it as is, since signing needs the key itself
    webhook_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    webhook_secret_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    #: the key's public lookup part (``cck_<prefix>_<secret>``)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    #: hex SHA-256 of the whole key
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    tenant: Mapped[Tenant] = relationship()


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True, default=lambda: new_public_id("case"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    callback_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    #: the latest report (``CaseReport.model_dump(mode="json")``) and the job that wrote it
    report_json: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    report_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # jobs.id (no FK: jobs refer to cases)
    #: report.html of the latest report, relative to the data dir
    report_html: Mapped[str | None] = mapped_column(String(500), nullable=True)
    photos: Mapped[list["Photo"]] = relationship(back_populates="case", order_by="Photo.id")
    __table_args__ = (Index("ix_cases_tenant_id_id", "tenant_id", "id"),)


class Photo(Base):
    __tablename__ = "photos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True, default=lambda: new_public_id("photo"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    #: the client's file name as printable text (never used as a path)
    filename: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16))  # stored | rejected
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    case: Mapped[Case] = relationship(back_populates="photos")


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True, default=lambda: new_public_id("job"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="assess")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    #: changes on every claim: a worker's completion counts only with the token it claimed with
    lease_token: Mapped[str | None] = mapped_column(String(40), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)  # "host:pid"
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: callback delivery: none | pending | delivered | failed
    callback_state: Mapped[str] = mapped_column(String(16), default="none", index=True)
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    callback_next_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    callback_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    __table_args__ = (
        # at most one queued/running job per case: no case is assessed twice concurrently
        Index("uq_jobs_active_case", "case_id", unique=True,
              sqlite_where=text("status IN ('queued', 'running')"),
              postgresql_where=text("status IN ('queued', 'running')")),
    )


class Finding(Base):
    __tablename__ = "findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    #: position in the report's ``findings`` list
    index: Mapped[int] = mapped_column(Integer)
    part: Mapped[str] = mapped_column(String(100))
    damage: Mapped[str] = mapped_column(String(100))
    size_class: Mapped[str] = mapped_column(String(16))
    c_refined: Mapped[float] = mapped_column(Float)
    needs_review: Mapped[bool] = mapped_column(Boolean)
    review_state: Mapped[str] = mapped_column(String(16), default="pending")
    #: the whole finding as the report states it
    data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    """Append-only: who did what to which case (``actor`` e.g. ``key:<prefix>``, ``worker:host:pid``)."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="SET NULL"), nullable=True,
                                                  index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class PhotoHash(Base):
    """One photo of the reused-photo index (issue 19): the columns of
    :meth:`carcheck.pipeline.reuse.HashEntry.row` plus the tenant, keyed by (case, photo name as the case's
    report names it). Only matched within the same tenant (:mod:`carcheck.serve.reuse_index`)."""

    __tablename__ = "photo_hashes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    photo: Mapped[str] = mapped_column(String(300))
    hash_size: Mapped[int] = mapped_column(Integer)
    aspect: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    #: PhotoHashes.to_bytes() (3.2 kB at hash size 16)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)
    added: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    __table_args__ = (UniqueConstraint("case_id", "photo", name="uq_photo_hashes_case_id_photo"),
                      Index("ix_photo_hashes_tenant_id_hash_size", "tenant_id", "hash_size"))


class LoginFailure(Base):
    """One failed login of the review UI (issue 28): the e-mail as typed (lower-cased, cut to 320
    characters) and the client address; counted per account and per address over the throttling window
    (:mod:`carcheck.serve.review.throttle`)."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    email: Mapped[str] = mapped_column(String(320))
    client: Mapped[str] = mapped_column(String(64))
    __table_args__ = (Index("ix_login_failures_email_at", "email", "at"),
                      Index("ix_login_failures_client_at", "client", "at"))
