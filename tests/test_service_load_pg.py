"""The load test of test_service_load.py on PostgreSQL (CARCHECK_TEST_POSTGRES_URL; .ci/run sets it)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi")
from test_service_load import check_load  # noqa: E402

PG_URL = os.environ.get("CARCHECK_TEST_POSTGRES_URL")


def test_load_50_clients_postgres(tmp_path):
    if not PG_URL:
        pytest.skip("CARCHECK_TEST_POSTGRES_URL is unset (.ci/run starts a PostgreSQL and sets it)")
    from support.harness import postgres_database

    with postgres_database(PG_URL) as url:
        check_load(tmp_path, url)
