"""Tenants, API keys (Bearer auth) and the per-key rate limit.

A key is ``cck_<prefix>_<secret>``: ``prefix`` (12 hex digits) finds the row, ``secret`` is 32
random bytes (``secrets.token_urlsafe``, 256 bits). The database stores only the SHA-256 of the
whole key, compared with :func:`hmac.compare_digest`. Not argon2: a slow password hash protects
low-entropy secrets against guessing after a database leak; a 256-bit random key cannot be
guessed whatever the hash, and argon2's ~50 ms of CPU per request would be paid on every API
call of this 2-core machine (the p95 target is 200 ms).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db.models import ApiKey, AuditEvent, Tenant
from .errors import ApiError

__all__ = ["create_key", "hash_key", "verify_key", "list_keys", "revoke_key", "Principal", "RateLimiter"]

KEY_PREFIX = "cck"


def hash_key(key: str) -> str:
    """Hex SHA-256 of a key (what the database stores)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(session: Session, tenant_name: str, name: str | None = None) -> str:
    """Create (or reuse) the tenant ``tenant_name`` and a new API key for it; returns the key (shown once).

    Raises:
        ValueError: for an empty or over-long tenant name.
    """
    tenant_name = tenant_name.strip()
    if not tenant_name or len(tenant_name) > 200:
        raise ValueError(f"tenant name {tenant_name!r}: must be 1 to 200 characters")
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(tenant_id=tenant.id, prefix=prefix, key_hash=hash_key(key), name=name))
    session.add(AuditEvent(tenant_id=tenant.id, actor="cli", action="key.created", detail={"prefix": prefix}))
    return key


def list_keys(session: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """(key row, tenant name) of every key, or of one tenant's, oldest first (rows hold no secret)."""
    q = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_name is not None:
        q = q.where(Tenant.name == tenant_name.strip())
    return [(k, t) for k, t in session.execute(q.order_by(Tenant.name, ApiKey.id)).all()]


def revoke_key(session: Session, prefix: str, actor: str = "cli") -> tuple[ApiKey, bool]:
    """Revoke the key ``cck_<prefix>_...`` (``prefix``: the 12 hex digits, or the whole ``cck_<prefix>``
    part); every request with it answers 401 from then on (keys are checked against the database on each
    request). The caller commits.

    Returns:
        (the key row, True if it was revoked now; False if it already was).

    Raises:
        ValueError: no key with this prefix.
    """
    prefix = prefix.strip()
    if prefix.startswith(f"{KEY_PREFIX}_"):
        prefix = prefix.split("_")[1]
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        raise ValueError(f"no API key with prefix {prefix!r}")
    if key.revoked_at is not None:
        return key, False
    from .db.models import utcnow

    key.revoked_at = utcnow()
    session.add(AuditEvent(tenant_id=key.tenant_id, actor=actor, action="key.revoked", detail={"prefix": prefix}))
    return key, True


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and the key's prefix."""

    tenant_id: int
    tenant_name: str
    key_prefix: str

    @property
    def actor(self) -> str:
        """Audit actor text."""
        return f"key:{self.key_prefix}"


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def verify_key(session: Session, authorization: str | None) -> Principal:
    """The principal of an ``Authorization: Bearer KEY`` header.

    Raises:
        ApiError(401): no header, not Bearer, malformed key, unknown or revoked key, wrong secret.
    """
    if not authorization:
        raise _unauthorized("missing Authorization: Bearer <API key>")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized("Authorization must be 'Bearer <API key>'")
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 12:
        raise _unauthorized("invalid API key")
    row = session.execute(select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
                          .where(ApiKey.prefix == parts[1])).first()
    expected = row[0].key_hash if row else hash_key("no such key")  # same work for unknown prefixes
    if not hmac.compare_digest(hash_key(key), expected) or row is None or row[0].revoked_at is not None:
        raise _unauthorized("invalid API key")
    return Principal(row[0].tenant_id, row[1], row[0].prefix)


class RateLimiter:
    """Token bucket per key, in this server process: ``rate`` requests/s sustained, ``burst`` at once.

    (One uvicorn process serves the API; several servers behind a balancer would each allow the rate.)
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take one token for ``key``.

        Raises:
            ApiError(429) with ``Retry-After`` (seconds) when the bucket is empty.
        """
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / self.rate
                raise ApiError(429, "rate_limited", f"rate limit of {self.rate:g} requests/s per key exceeded",
                               {"retry_after_seconds": round(wait, 3)}, headers={"Retry-After": str(max(1, round(wait)))})
            self._buckets[key] = (tokens - 1, now)
