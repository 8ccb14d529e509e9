"""Login throttling of the review UI (issue 28).

After ``login_max_failures_account`` (5) failed logins for one account e-mail, or
``login_max_failures_client`` (20) from one client address, within ``login_window_seconds`` (900 s),
``/login`` answers 429 with ``Retry-After`` (seconds until the oldest of those failures leaves the
window) without checking the password: a throttled attempt costs no argon2 work. Failures are rows of
``login_failures`` (shared by every server process on the database, kept across restarts); rows older
than the window are deleted as new failures arrive, and a successful login clears its account's rows.
Every failure (``user.login_failed``) and every refused attempt (``user.login_throttled``) is an audit
event with the e-mail as typed and the client address. The client address is the TCP peer: behind a
reverse proxy every user shares the proxy's address (the per-client limit then applies to all of them).
"""

from __future__ import annotations

import datetime as dt
import math

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..db.models import AuditEvent, LoginFailure, utcnow
from .models import Reviewer

__all__ = ["retry_after", "record_failure", "record_throttled", "clear_account", "normalize_email"]


def normalize_email(email: str) -> str:
    """The e-mail as accounts store it (stripped, lower-case), cut to 320 characters."""
    return email.strip().lower()[:320]


def _oldest_blocking(session: Session, column, value: str, limit: int, since: dt.datetime) -> dt.datetime | None:
    """The time of the ``limit``-th most recent failure with ``column == value`` since ``since``, or None
    when there are fewer (then the key is not throttled)."""
    rows = session.scalars(select(LoginFailure.at).where(column == value, LoginFailure.at > since)
                           .order_by(LoginFailure.at.desc()).limit(limit)).all()
    return rows[-1] if len(rows) >= limit else None


def retry_after(session: Session, settings, email: str, client: str) -> int | None:
    """Seconds until a login for ``email`` from ``client`` is allowed again (at least 1), or None when
    it is allowed now."""
    now = utcnow()
    window = dt.timedelta(seconds=settings.login_window_seconds)
    since = now - window
    waits = []
    for column, value, limit in ((LoginFailure.email, email, settings.login_max_failures_account),
                                 (LoginFailure.client, client, settings.login_max_failures_client)):
        at = _oldest_blocking(session, column, value, limit, since)
        if at is not None:
            waits.append((at + window - now).total_seconds())
    return max(1, math.ceil(max(waits))) if waits else None


def _tenant_of(session: Session, email: str) -> int | None:
    return session.scalar(select(Reviewer.tenant_id).where(Reviewer.email == email))


def record_failure(session: Session, settings, email: str, client: str) -> int | None:
    """Record one failed login (row + ``user.login_failed`` audit event; the caller commits) and drop
    rows older than the window. Returns :func:`retry_after` after it: not None when this failure
    locked the account or the client (then a ``user.locked_out`` audit event is added as well)."""
    now = utcnow()
    session.execute(delete(LoginFailure).where(LoginFailure.at <= now - dt.timedelta(seconds=settings.login_window_seconds)))
    session.add(LoginFailure(at=now, email=email, client=client[:64]))
    tenant = _tenant_of(session, email)
    session.add(AuditEvent(tenant_id=tenant, actor=f"client:{client[:64]}", action="user.login_failed",
                           detail={"email": email, "client": client}))
    session.flush()
    wait = retry_after(session, settings, email, client)
    if wait is not None:
        session.add(AuditEvent(tenant_id=tenant, actor=f"client:{client[:64]}", action="user.locked_out",
                               detail={"email": email, "client": client, "retry_after_seconds": wait}))
    return wait


def record_throttled(session: Session, email: str, client: str, wait: int) -> None:
    """Audit a refused (throttled) attempt; the caller commits."""
    session.add(AuditEvent(tenant_id=_tenant_of(session, email), actor=f"client:{client[:64]}",
                           action="user.login_throttled",
                           detail={"email": email, "client": client, "retry_after_seconds": wait}))


def clear_account(session: Session, email: str) -> None:
    """Forget an account's failures after a successful login; the caller commits."""
    session.execute(delete(LoginFailure).where(LoginFailure.email == email))
