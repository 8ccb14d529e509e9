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
