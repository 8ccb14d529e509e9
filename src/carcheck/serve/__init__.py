"""The carcheck service (``carcheck serve``): cases over HTTP, a database, durable jobs.

Layout (FastAPI's "bigger applications"): :mod:`.app` (``create_app``), :mod:`.api` (one router
per resource), :mod:`.db` (SQLAlchemy models, sessions, Alembic migrations shipped in the
package), :mod:`.jobs` (the durable queue and the worker loop), :mod:`.auth` (tenants, API keys,
rate limit), :mod:`.storage` (content-addressed photos), :mod:`.limits` (upload limits) and
:mod:`.settings` (everything configurable, one pydantic model). Nothing here is imported by
``carcheck`` itself; the CLI imports it inside ``carcheck serve`` / ``carcheck keys``.
"""
