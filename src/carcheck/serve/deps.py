"""Request dependencies shared by the routers: the database session, the calling principal
(Bearer key, rate limit), the settings and the photo store, all taken from ``app.state``."""

from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, Path, Query, Request
from sqlalchemy.orm import Session

from .auth import Principal, verify_key

__all__ = ["get_session", "get_principal", "get_settings", "get_store", "MAX_ROW_ID", "RowIdPath", "RowIdQuery"]

#: the largest row id a path or query may name: the integer primary keys are 32-bit on PostgreSQL, and a
#: larger number (SQLite: above 2**63) made the database driver raise (a 500); FastAPI answers 422 instead
MAX_ROW_ID = 2 ** 31 - 1
RowIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
RowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]


def get_session(request: Request) -> Iterator[Session]:
    """One session per request (committed by the endpoint, rolled back on error)."""
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.close()


def get_principal(request: Request) -> Principal:
    """The caller (401 without a valid key, 429 above the key's rate)."""
    session = request.app.state.sessions()
    try:
        principal = verify_key(session, request.headers.get("authorization"))
    finally:
        session.close()
    request.app.state.rate_limiter.check(principal.key_prefix)
    return principal


def get_settings(request: Request):
    """The :class:`~carcheck.serve.settings.Settings` of the app."""
    return request.app.state.settings


def get_store(request: Request):
    """The :class:`~carcheck.serve.storage.PhotoStore` of the app."""
    return request.app.state.store


SessionDep = Depends(get_session)
PrincipalDep = Depends(get_principal)
