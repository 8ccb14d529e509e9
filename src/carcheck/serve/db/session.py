"""Engines, sessions and migrations of the service database.

SQLite (the embedded default, ``sqlite:///DATA_DIR/carcheck.db``) runs in WAL mode with a busy
timeout, and every transaction begins ``IMMEDIATE`` (takes the write lock up front): several
processes (the server and its workers) write to one file, and a deferred transaction that
reads and then writes can fail at once with "database is locked" when another process wrote in
between; transactions here are short, so waiting for the lock is cheap. PostgreSQL
(``postgresql+psycopg://...``) needs nothing special.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "session_factory", "upgrade", "sqlite_url", "open_database", "MIGRATIONS"]

#: the Alembic script folder shipped inside the package
MIGRATIONS = Path(__file__).with_name("migrations")


def sqlite_url(data_dir: str | Path) -> str:
    """The default database of a data dir: ``sqlite:///DATA_DIR/carcheck.db``."""
    return f"sqlite:///{Path(data_dir).resolve() / 'carcheck.db'}"


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine for ``url`` (SQLite: WAL, busy timeout 30 s, foreign keys on, IMMEDIATE transactions).

    Raises:
        ValueError: for a URL that is neither SQLite nor PostgreSQL.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=pool_size,
                               max_overflow=20, pool_pre_ping=False)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # the driver's own BEGIN off: the "begin" event issues it
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)
    raise ValueError(f"--database-url {url!r}: only sqlite:///FILE and postgresql+psycopg://... are supported")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (Alembic, the scripts in :data:`MIGRATIONS`)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def open_database(data_dir: str | Path, database_url: str | None = None) -> sessionmaker[Session]:
    """Sessions of a service database for the CLI (``carcheck keys / users / webhooks``), migrated to head.
    Files created from here on are private (umask 077); for the default SQLite database the data dir is
    created 0700 when missing.

    Raises:
        ValueError: an unsupported URL; OSError: the data dir cannot be created.
    """
    import os

    os.umask(0o077)
    if database_url is None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url or sqlite_url(data_dir))
    upgrade(engine)
    return session_factory(engine)
