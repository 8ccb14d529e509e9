"""Alembic environment: runs on the connection :func:`carcheck.serve.db.session.upgrade` passes,
or on ``sqlalchemy.url`` of an alembic.ini (``alembic revision --autogenerate`` during development)."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from carcheck.serve.db.models import Base
# every module that declares tables on Base, so that autogenerate compares all of them (without the
# review tables it proposed dropping them)
import carcheck.serve.review.models  # noqa: E402,F401

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters by copying the table
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
