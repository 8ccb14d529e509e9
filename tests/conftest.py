"""Shared fixtures. Real data lives in ../shared/data beside the repository; tests that need a
set skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CARCHECK_DATA", REPO.parent / "shared" / "data"))


def data_path(rel: str) -> Path:
    """Path of a shared dataset, skipping the test when it is not there."""
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"shared dataset {p} is absent (set CARCHECK_DATA to its folder)")
    return p


@pytest.fixture(scope="session")
def backbone():
    import torch

    from carcheck.models.backbone import build_backbone

    torch.set_num_threads(2)
    return build_backbone("lite0")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request):
    """The service database of a test, once per backend: None (the embedded SQLite under the data
    folder) and a throwaway PostgreSQL database (``CARCHECK_TEST_POSTGRES_URL``, which ``.ci/run``
    sets after starting a PostgreSQL; skipped with that reason where it is unset)."""
    if request.param == "sqlite":
        yield None
        return
    url = os.environ.get("CARCHECK_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("CARCHECK_TEST_POSTGRES_URL is unset (.ci/run starts a PostgreSQL and sets it)")
    from support.harness import postgres_database

    with postgres_database(url) as db_url:
        yield db_url


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Playwright) for the browser tests: the executable
    :func:`carcheck.report.pdf.find_chromium` finds (Debian's ``chromium``, which ``.ci/run`` installs);
    skipped where Playwright or Chromium is missing."""
    pw_api = pytest.importorskip("playwright.sync_api")
    from carcheck.report.pdf import find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium (apt-get install chromium; .ci/run does)")
    with pw_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
