"""Tables of human review (issue 18), on the service's declarative ``Base`` (migration 0002_review).

    reviewers: a person who logs in to the review UI: tenant, e-mail (unique), role reviewer|admin,
        argon2 password hash.
    web_sessions: server-side login sessions: the cookie carries a random token, the table its SHA-256,
        the session's CSRF token and its expiry.
    finding_reviews: the current reviewed state of one finding of a case's current report (the "after"
        of its latest decision, with the damage instances rejected, 0005_rejected_instances); removed with
        the finding when a re-assessment replaces the findings.
    added_damages: damage a reviewer drew (box, optional polygon) on a stored photo, with type and part.
    case_reviews: a case's review: in_review | reviewed, who closed it and when.
    review_decisions: every decision (also copied to the append-only ``audit_events``): who, when,
        what, before -> after. Append-only as well: rows are never updated or deleted.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..db.models import Base, UTCDateTime, new_public_id, utcnow

__all__ = ["Reviewer", "WebSession", "FindingReview", "AddedDamage", "CaseReview", "ReviewDecision", "ROLES",
           "DECISION_STATES", "SEVERITIES"]

ROLES = ("reviewer", "admin")
#: a finding's reviewed state: confirmed (as predicted), corrected (damage type or part changed),
#: rejected (not damage / wrong), accepted (not flagged for review, left as is when the case was closed)
DECISION_STATES = ("confirmed", "corrected", "rejected", "accepted")
#: the severity grades a reviewer may set (the severity head's classes)
SEVERITIES = ("minor", "moderate", "severe")


class Reviewer(Base):
    __tablename__ = "reviewers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="reviewer")
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebSession(Base):
    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: hex SHA-256 of the cookie's token
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class FindingReview(Base):
    __tablename__ = "finding_reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"), unique=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    damage: Mapped[str] = mapped_column(String(100))
    part: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the finding's damage instances the reviewer rejected, ['<photo public id>:<instance id>', ...]
    #: (migration 0005; None: none decided, as before it)
    rejected_instances: Mapped[list | None] = mapped_column(JSON, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AddedDamage(Base):
    __tablename__ = "added_damages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True, default=lambda: new_public_id("damage"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    damage: Mapped[str] = mapped_column(String(100))
    part: Mapped[str] = mapped_column(String(100))
    #: [x, y, w, h] in pixels of the stored original photo
    bbox_xywh: Mapped[list] = mapped_column(JSON)
    #: [x1, y1, x2, y2, ...] in original-photo pixels, or None (the box is the shape)
    polygon: Mapped[list | None] = mapped_column(JSON, nullable=True)
    severity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CaseReview(Base):
    __tablename__ = "case_reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    #: the job whose report was reviewed (a re-assessment opens a new review)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="in_review")  # in_review | reviewed
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ReviewDecision(Base):
    __tablename__ = "review_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    #: the finding decided on (None for added damage / case decisions, or once a re-assessment removed it)
    finding_id: Mapped[int | None] = mapped_column(ForeignKey("findings.id", ondelete="SET NULL"), nullable=True,
                                                   index=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finding_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("reviewers.id", ondelete="SET NULL"), nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    #: C_refined of the finding (the score the review threshold is set on) and the model version
    c_refined: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
