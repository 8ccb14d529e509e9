"""Completion callbacks (issue 28): the URL policy, the signature, and delivery from the outbox.

**Outbox.** A finished job of a case with a ``callback_url`` is marked ``callback_state=pending`` in
the same transaction that records the result (:func:`carcheck.serve.jobs.complete`): that committed
row is the outbox entry. :class:`CallbackDispatcher`, a thread of the ``carcheck serve`` process,
drains it: it claims one attempt by compare-and-set on ``callback_attempts`` and reads the URL, the
payload and the tenant's secret in one short transaction, commits, and only then talks to the
receiver, with no session or transaction open, within :attr:`Settings.callback_timeout_seconds`
per phase (connect, send, wait for the status line); it records the outcome in a second short
transaction. Deliveries run on a small thread pool with at most :data:`PER_TENANT` in flight per
tenant, so receivers that never answer hold neither the database, nor the API, nor the assessment
workers, nor another tenant's callbacks.

**URL policy** (:func:`check_url`): a callback host must resolve only to public unicast addresses:
loopback, private, link-local, shared (CGNAT), multicast, reserved, unspecified, and IPv4-mapped forms
of those are refused, at case creation (422 ``callback_url_not_allowed``) and again at each delivery
(a name that resolved to a public address at creation may resolve elsewhere later: DNS rebinding).
Delivery connects to the address that was checked (the URL's host is sent as ``Host`` and as the TLS
server name), so the check and the connection cannot disagree. ``carcheck serve --allow-callback-host
HOST`` (repeatable) exempts a host name or address, e.g. a receiver on the same machine.

**Signature**, as Stripe and GitHub sign webhooks: ``X-Carcheck-Timestamp: <unix seconds>`` and
``X-Carcheck-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``, one secret per
tenant (``carcheck webhooks secret``); :func:`verify_signature` is the receiver's check.

The audit log and the job's ``callback_error`` say ``delivery failed`` with the HTTP status class
(``HTTP 5xx``) or ``no response``, never the socket's own error text (which would tell a tenant what
listens where); logs name the URL without its query string or user info.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .db.models import AuditEvent, Case, Job, Tenant, utcnow

__all__ = ["CallbackUrlNotAllowed", "check_url", "redact_url", "sign", "verify_signature", "tenant_secret",
           "due_callbacks", "deliver_callback", "CallbackDispatcher", "SIGNATURE_HEADER", "TIMESTAMP_HEADER",
           "PER_TENANT"]

log = logging.getLogger("carcheck.serve.callbacks")
# httpx logs every request's full URL at INFO; a token in a callback's query string must not reach a log
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

SIGNATURE_HEADER = "X-Carcheck-Signature"
TIMESTAMP_HEADER = "X-Carcheck-Timestamp"
#: deliveries of one tenant in flight at once (per server process)
PER_TENANT = 4
#: longest a host name lookup may take, seconds (a lookup that takes longer counts as failed)
RESOLVE_TIMEOUT = 5.0
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="carcheck-resolve")


class CallbackUrlNotAllowed(ValueError):
    """A callback URL the policy refuses; ``str(e)`` says why without any address it resolved to."""


def redact_url(url: str) -> str:
    """``url`` without user info, query string and fragment (what logs may show)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparsable url>"


def _refused(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``addr`` may not receive callbacks, or None for a public unicast address."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for attr in ("is_loopback", "is_private", "is_link_local", "is_multicast", "is_reserved", "is_unspecified"):
        if getattr(addr, attr):
            return attr[3:].replace("_", "-")
    if not addr.is_global:  # e.g. 100.64.0.0/10 (shared address space), 192.0.0.0/24
        return "non-global"
    return None


def _resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (``socket.getaddrinfo``), within :data:`RESOLVE_TIMEOUT` s.

    Raises:
        CallbackUrlNotAllowed: the name does not resolve (or not in time).
    """
    fut = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = fut.result(timeout=RESOLVE_TIMEOUT)
    except (OSError, UnicodeError, concurrent.futures.TimeoutError):
        raise CallbackUrlNotAllowed(f"callback host {host!r} does not resolve") from None
    addrs = []
    for *_, sockaddr in infos:
        a = sockaddr[0].split("%", 1)[0]  # an IPv6 zone id is not part of the address
        if a not in addrs:
            addrs.append(a)
    if not addrs:
        raise CallbackUrlNotAllowed(f"callback host {host!r} does not resolve")
    return addrs


@dataclass(frozen=True)
class Target:
    """Where to connect for a checked URL: ``url`` with the host replaced by the checked address,
    ``host_header`` and ``sni`` the original host (for ``Host:`` and TLS)."""

    url: str
    host_header: str
    sni: str | None


def check_url(url: str, allowed_hosts: frozenset[str] | set[str] | tuple = ()) -> Target:
    """Check a callback URL against the policy (module docstring) and pin the address to connect to.

    Args:
        url: an absolute http(s) URL.
        allowed_hosts: host names or addresses exempt from the address check (compared lower-case,
            as the URL names the host or as an address it resolves to).

    Returns:
        the :class:`Target` (first address the host resolved to; all of them were checked).

    Raises:
        CallbackUrlNotAllowed: not http(s), no host, does not resolve, or resolves to an address the
            policy refuses.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackUrlNotAllowed("callback URL is not a valid URL") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackUrlNotAllowed("callback URL must be http(s)://host/...")
    allowed = {h.strip().lower().strip("[]") for h in allowed_hosts}
    addrs = _resolve(host, port)
    if host not in allowed:
        for a in addrs:
            if a in allowed:
                continue
            why = _refused(ipaddress.ip_address(a))
            if why is not None:
                raise CallbackUrlNotAllowed(f"callback host {host!r} resolves to a {why} address; callbacks go "
                                            "to public addresses only (the operator may allow a host with "
                                            "carcheck serve --allow-callback-host)")
    ip = addrs[0]
    netloc = (f"[{ip}]" if ":" in ip else ip) + (f":{parts.port}" if parts.port else "")
    default_port = parts.port in (None, 443 if parts.scheme == "https" else 80)
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{parts.port}")
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    try:
        ipaddress.ip_address(host)
        named = False
    except ValueError:
        named = True
    # TLS: the certificate is checked against the name in the URL (an address URL: against the address)
    return Target(pinned, host_header, host if parts.scheme == "https" and named else None)


# ---------------------------------------------------------------------------------------------- signing
def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Carcheck-Signature`` value: ``v1=`` + hex HMAC-SHA256(secret, ``"<timestamp>.<body>"``)."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify_signature(secret: str, timestamp: str | None, signature: str | None, body: bytes,
                     tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """The receiver's check: the signature matches ``body`` and the timestamp is within
    ``tolerance_s`` seconds of ``now`` (unix seconds; default: the clock), which refuses replays of old
    deliveries. Constant-time comparison; several ``v1=`` values (comma-separated) are each tried."""
    try:
        ts = int(timestamp or "")
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body)
    return any(hmac.compare_digest(expected, s.strip()) for s in (signature or "").split(","))


def new_secret() -> str:
    """A new signing secret: ``whsec_`` + 32 random bytes, URL-safe base64."""
    return "whsec_" + secrets.token_urlsafe(32)


def tenant_secret(session: Session, tenant: Tenant, rotate: bool = False, actor: str = "cli") -> str:
    """The tenant's signing secret, made on first use (``rotate``: replaced by a new one); the caller
    commits. Creation and rotation are audit events (without the secret)."""
    if tenant.webhook_secret is None or rotate:
        rotated = tenant.webhook_secret is not None
        tenant.webhook_secret, tenant.webhook_secret_at = new_secret(), utcnow()
        session.add(AuditEvent(tenant_id=tenant.id, actor=actor,
                               action="webhook_secret.rotated" if rotated else "webhook_secret.created", detail=None))
    return tenant.webhook_secret


# ---------------------------------------------------------------------------------------------- delivery
def due_callbacks(session: Session, limit: int = 10, exclude_tenants=()) -> list[tuple[int, int]]:
    """``(job id, tenant id)`` of jobs whose callback is due now, oldest due first (ends the
    session's transaction)."""
    q = (select(Job.id, Case.tenant_id).join(Case, Case.id == Job.case_id)
         .where(Job.callback_state == "pending", Job.callback_next_at <= utcnow()))
    if exclude_tenants:
        q = q.where(Case.tenant_id.not_in(list(exclude_tenants)))
    rows = [(j, t) for j, t in session.execute(q.order_by(Job.callback_next_at).limit(limit)).all()]
    session.rollback()
    return rows


@dataclass
class _Attempt:
    job_id: int
    job_public_id: str
    case_id: int
    tenant_id: int
    attempt: int
    url: str
    body: bytes
    secret: str


def _claim(session: Session, job_id: int, settings) -> _Attempt | None:
    """Claim the next attempt of one job's callback and read what it sends (one short transaction,
    committed before returning). None when the job is not pending or another process took the attempt."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.callback_state != "pending":
        session.rollback()
        return None
    n = job.callback_attempts
    res = session.execute(update(Job).where(Job.id == job_id, Job.callback_attempts == n,
                                            Job.callback_state == "pending")
                          .values(callback_attempts=n + 1,
                                  callback_next_at=utcnow() + dt.timedelta(seconds=4 * settings.callback_timeout_seconds
                                                                           + 10)))
    if res.rowcount != 1:
        session.rollback()
        return None
    case = session.get(Case, job.case_id)
    tenant = session.get(Tenant, case.tenant_id)
    secret = tenant_secret(session, tenant, actor="callback")
    payload = {"event": f"case.{case.status}", "case_id": case.public_id, "external_id": case.external_id,
               "job_id": job.public_id, "status": case.status, "case_url": f"/v1/cases/{case.public_id}"}
    att = _Attempt(job.id, job.public_id, case.id, case.tenant_id, n + 1, case.callback_url or "",
                   json.dumps(payload, separators=(",", ":")).encode("utf-8"), secret)
    session.commit()
    return att


def _post(att: _Attempt, settings, client=None) -> str | None:
    """POST one attempt (no database access here). Returns None on a 2xx, else the error text for the
    audit log: ``delivery failed: HTTP 4xx/5xx/3xx``, ``... no response`` or ``... host not allowed``."""
    import httpx

    try:
        target = check_url(att.url, settings.allowed_callback_hosts)
    except CallbackUrlNotAllowed:
        return "delivery failed: callback host not allowed"
    ts = int(time.time())
    headers = {"Host": target.host_header, "Content-Type": "application/json", "User-Agent": "carcheck-callback",
               "X-Carcheck-Attempt": str(att.attempt), "X-Carcheck-Event-Id": f"{att.job_public_id}",
               TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(att.secret, ts, att.body)}
    t = settings.callback_timeout_seconds
    timeout = httpx.Timeout(t, connect=min(t, 5.0))
    extensions = {"sni_hostname": target.sni} if target.sni else {}
    own = client is None
    client = client or httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
    try:
        # the status line is all that counts: the body is never read
        with client.stream("POST", target.url, content=att.body, headers=headers, timeout=timeout,
                           extensions=extensions) as r:
            code = r.status_code
    except Exception:  # noqa: BLE001 - any failure to get a status is "no response"; the socket error stays here
        return "delivery failed: no response"
    finally:
        if own:
            client.close()
    if 200 <= code < 300:
        return None
    return f"delivery failed: HTTP {code // 100}xx"


def _record(session: Session, att: _Attempt, error: str | None, settings) -> str:
    """Write the outcome of one attempt (one short transaction)."""
    if error is None:
        state, next_at = "delivered", None
    elif att.attempt >= settings.callback_max_attempts:
        state, next_at = "failed", None
    else:
        state = "pending"
        next_at = utcnow() + dt.timedelta(seconds=min(300.0, settings.callback_backoff_seconds * 2 ** (att.attempt - 1)))
    session.execute(update(Job).where(Job.id == att.job_id, Job.callback_attempts == att.attempt)
                    .values(callback_state=state, callback_next_at=next_at, callback_error=error))
    session.add(AuditEvent(tenant_id=att.tenant_id, case_id=att.case_id, actor="callback",
                           action=f"callback.{'delivered' if error is None else 'error'}",
                           detail={"job": att.job_public_id, "attempt": att.attempt, "error": error}))
    session.commit()
    return state


def deliver_callback(sessions, job_id: int, settings, client=None) -> str | None:
    """Deliver one attempt of a job's callback: claim it (short transaction), POST it with no
    transaction open, record the outcome (short transaction).

    Args:
        sessions: a session factory (each step takes its own session).
        job_id: ``jobs.id``.
        settings: :class:`~carcheck.serve.settings.Settings` (timeouts, attempts, backoff, allowed hosts).
        client: an ``httpx.Client`` to send with (tests); default: a new one per attempt.

    Returns:
        the callback state after the attempt (``delivered``, ``pending``, ``failed``), or None when
        the job had nothing due or another process took the attempt.
    """
    with sessions() as s:
        att = _claim(s, job_id, settings)
    if att is None:
        return None
    error = _post(att, settings, client)
    if error is None:
        log.info("callback of %s delivered to %s", att.job_public_id, redact_url(att.url))
    else:
        log.warning("callback of %s to %s: %s (attempt %d)", att.job_public_id, redact_url(att.url), error,
                    att.attempt)
    with sessions() as s:
        return _record(s, att, error, settings)


class CallbackDispatcher:
    """The delivery thread of ``carcheck serve``: polls the outbox every ``poll_seconds`` and hands due
    callbacks to a pool of ``threads`` delivery threads, at most :data:`PER_TENANT` of one tenant at once."""

    def __init__(self, sessions, settings, threads: int = 16, poll_seconds: float | None = None) -> None:
        self.sessions, self.settings = sessions, settings
        self.poll = poll_seconds if poll_seconds is not None else settings.poll_seconds
        self.threads = threads
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="carcheck-callback")
        self.inflight: dict[int, int] = {}  # tenant id -> deliveries in flight
        self.jobs: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="carcheck-callbacks")

    def start(self) -> "CallbackDispatcher":
        """Start polling."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; deliveries in flight are left to finish on their own (daemon threads)."""
        self._stop.set()
        self._thread.join(timeout)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _done(self, tenant: int, job_id: int) -> None:
        with self._lock:
            self.inflight[tenant] -= 1
            self.jobs.discard(job_id)

    def _run(self, tenant: int, job_id: int) -> None:
        try:
            deliver_callback(self.sessions, job_id, self.settings)
        except Exception:  # noqa: BLE001 - a database hiccup: the attempt is retried when it is due again
            log.exception("callback delivery of job %d failed", job_id)
        finally:
            self._done(tenant, job_id)

    def tick(self) -> int:
        """Hand every due callback that has a free slot to the pool; returns how many were started."""
        with self._lock:
            full = [t for t, n in self.inflight.items() if n >= PER_TENANT]
            free = self.threads - sum(self.inflight.values())
        if free <= 0:
            return 0
        with self.sessions() as s:
            due = due_callbacks(s, limit=4 * self.threads, exclude_tenants=full)
        started = 0
        for job_id, tenant in due:
            with self._lock:
                if job_id in self.jobs or self.inflight.get(tenant, 0) >= PER_TENANT or \
                        sum(self.inflight.values()) >= self.threads:
                    continue
                self.inflight[tenant] = self.inflight.get(tenant, 0) + 1
                self.jobs.add(job_id)
            self.pool.submit(self._run, tenant, job_id)
            started += 1
        return started

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - e.g. the database restarting: try again next poll
                log.exception("callback dispatcher: polling the outbox failed")
            self._stop.wait(self.poll)
