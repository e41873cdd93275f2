"""Paths of the real data (../shared/data, skipped when absent) and of this repository's fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DATA = Path(os.environ.get("ZOFO_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data")


@pytest.fixture(scope="session")
def data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set ZOFO_SHARED_DATA)")
    return DATA


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES
