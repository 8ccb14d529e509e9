"""Reviewer accounts (argon2id password hashes, argon2-cffi) and server-side login sessions with a
per-session CSRF token.

A login creates a :class:`~carcheck.serve.review.models.WebSession`: the browser's cookie holds a
256-bit random token, the database only its SHA-256 (a leaked table gives no usable cookie). Each
session has its own CSRF token (also 256 bits), put in every form of the UI and checked on every POST.
Passwords use argon2 (unlike API keys, see :mod:`carcheck.serve.auth`): a person's password has
little entropy, and a slow memory-hard hash is what protects it after a database leak.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import AuditEvent, Tenant, utcnow
from .models import ROLES, Reviewer, WebSession

__all__ = ["create_user", "authenticate", "open_session", "session_user", "close_session", "ReviewUser",
           "disable_user", "list_users", "SESSION_HOURS", "MIN_PASSWORD", "ARGON2_CONCURRENCY"]

#: a login session lasts this long (hours)
SESSION_HOURS = 12
#: shortest accepted password (characters)
MIN_PASSWORD = 10

_hasher = PasswordHasher()  # argon2id, the library's (RFC 9106 low-memory) defaults
_DUMMY = _hasher.hash("not a password of anyone")
#: password checks (argon2, ~50 ms of CPU and 64 MiB each) that run at once in one server process;
#: more logins wait their turn, so a burst of logins cannot take every core from the API
ARGON2_CONCURRENCY = 2
_argon2_slots = threading.BoundedSemaphore(ARGON2_CONCURRENCY)


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user(session: Session, tenant_name: str, email: str, role: str, password: str) -> Reviewer:
    """Create a reviewer (tenant created if new); the caller commits.

    Raises:
        ValueError: unknown role, malformed e-mail, password shorter than :data:`MIN_PASSWORD`,
            an e-mail that already has an account, an empty tenant name.
    """
    email = email.strip().lower()
    tenant_name = tenant_name.strip()
    if role not in ROLES:
        raise ValueError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
        raise ValueError(f"e-mail {email!r} is not an address")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password: at least {MIN_PASSWORD} characters")
    if not tenant_name or len(tenant_name) > 200:
        raise ValueError(f"tenant name {tenant_name!r}: must be 1 to 200 characters")
    if session.scalar(select(Reviewer.id).where(Reviewer.email == email)) is not None:
        raise ValueError(f"{email} already has an account")
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    user = Reviewer(tenant_id=tenant.id, email=email, role=role, password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    session.add(AuditEvent(tenant_id=tenant.id, actor="cli", action="user.created",
                           detail={"user": user.id, "email": email, "role": role}))
    return user


@dataclass(frozen=True)
class ReviewUser:
    """A logged-in reviewer: who (``actor`` ``user:<id>``), which tenant, and the session's CSRF token."""

    id: int
    email: str
    role: str
    tenant_id: int
    tenant_name: str
    csrf_token: str
    session_id: int

    @property
    def actor(self) -> str:
        """Audit actor text."""
        return f"user:{self.id}"


def authenticate(session: Session, email: str, password: str) -> Reviewer | None:
    """The reviewer with this e-mail and password, or None (same argon2 work for unknown e-mails)."""
    user = session.scalar(select(Reviewer).where(Reviewer.email == email.strip().lower()))
    try:
        with _argon2_slots:
            _hasher.verify(user.password_hash if user else _DUMMY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def open_session(session: Session, user: Reviewer) -> str:
    """A new login session for ``user``; returns the cookie token (the caller commits)."""
    token = secrets.token_urlsafe(32)
    session.add(WebSession(token_hash=_sha(token), reviewer_id=user.id, csrf_token=secrets.token_urlsafe(32),
                           expires_at=utcnow() + dt.timedelta(hours=SESSION_HOURS)))
    session.add(AuditEvent(tenant_id=user.tenant_id, actor=f"user:{user.id}", action="user.login",
                           detail={"email": user.email}))
    return token


def session_user(session: Session, token: str | None) -> ReviewUser | None:
    """The reviewer of a session cookie's token, or None (no, unknown, expired or revoked session)."""
    if not token or len(token) > 200:
        return None
    row = session.execute(select(WebSession, Reviewer, Tenant.name)
                          .join(Reviewer, Reviewer.id == WebSession.reviewer_id)
                          .join(Tenant, Tenant.id == Reviewer.tenant_id)
                          .where(WebSession.token_hash == _sha(token))).first()
    if row is None:
        return None
    ws, user, tenant_name = row
    if ws.revoked_at is not None or ws.expires_at <= utcnow() or user.disabled_at is not None:
        return None
    return ReviewUser(user.id, user.email, user.role, user.tenant_id, tenant_name, ws.csrf_token, ws.id)


def check_csrf(user: ReviewUser, token: str | None) -> bool:
    """Whether ``token`` is the session's CSRF token (constant-time comparison)."""
    return bool(token) and hmac.compare_digest(str(token), user.csrf_token)


def close_session(session: Session, user: ReviewUser) -> None:
    """Revoke the session (logout); the caller commits."""
    ws = session.get(WebSession, user.session_id)
    if ws is not None and ws.revoked_at is None:
        ws.revoked_at = utcnow()
        session.add(AuditEvent(tenant_id=user.tenant_id, actor=user.actor, action="user.logout", detail=None))


def list_users(session: Session, tenant_name: str | None = None) -> list[tuple[Reviewer, str]]:
    """(reviewer, tenant name) of every account, or of one tenant's, ordered by tenant and e-mail."""
    q = select(Reviewer, Tenant.name).join(Tenant, Tenant.id == Reviewer.tenant_id)
    if tenant_name is not None:
        q = q.where(Tenant.name == tenant_name.strip())
    return [(u, t) for u, t in session.execute(q.order_by(Tenant.name, Reviewer.email)).all()]


def disable_user(session: Session, email: str, tenant_name: str, actor: str = "cli") -> tuple[Reviewer, int]:
    """Disable the account ``email`` of tenant ``tenant_name`` and end its login sessions (they are
    revoked: the next request with their cookie goes to /login); the caller commits. Disabling a
    disabled account ends any session left and changes nothing else.

    Returns:
        (the reviewer, how many open sessions were ended).

    Raises:
        ValueError: no account with this e-mail in this tenant.
    """
    email = email.strip().lower()
    user = session.scalar(select(Reviewer).join(Tenant, Tenant.id == Reviewer.tenant_id)
                          .where(Reviewer.email == email, Tenant.name == tenant_name.strip()))
    if user is None:
        raise ValueError(f"no account {email} in tenant {tenant_name!r}")
    now = utcnow()
    open_sessions = list(session.scalars(select(WebSession).where(WebSession.reviewer_id == user.id,
                                                                  WebSession.revoked_at.is_(None),
                                                                  WebSession.expires_at > now)))
    for ws in open_sessions:
        ws.revoked_at = now
    if user.disabled_at is None:
        user.disabled_at = now
    session.add(AuditEvent(tenant_id=user.tenant_id, actor=actor, action="user.disabled",
                           detail={"user": user.id, "email": email, "sessions_ended": len(open_sessions)}))
    return user, len(open_sessions)
