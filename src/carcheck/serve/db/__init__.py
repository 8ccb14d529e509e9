"""The service database: models (:mod:`.models`), engines and sessions (:mod:`.session`) and the
Alembic migrations (``migrations/``, run by :func:`.session.upgrade`)."""

from .session import make_engine, session_factory, upgrade

__all__ = ["make_engine", "session_factory", "upgrade"]
