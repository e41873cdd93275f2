"""Paths of the real data (../shared/data, skipped when absent) and of this repository's fixtures; an offline
setting (empty cache, no package index) and a local index serving a BIG-bench sdist the tests build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tasks.bigbench_sdist import TOY, build_sdist
from zofo.tasks.io import read_json

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


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """An empty zofo cache, no project data, and pip cut off from every package index; returns the cache."""
    monkeypatch.setenv("ZOFO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOFO_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.delenv("ZOFO_BIGBENCH", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-index"))
    return tmp_path / "cache"


@pytest.fixture
def local_index(tmp_path, monkeypatch, offline, data) -> Path:
    """A folder pip downloads from, holding a test sdist with toy, a nested task and the real strategyqa."""
    index = tmp_path / "index"
    index.mkdir()
    strategyqa = read_json(data / "bigbench" / "strategyqa" / "task.json.gz")
    build_sdist(index, {"toy": TOY, "group/sub": TOY | {"name": "sub"}, "strategyqa": strategyqa})
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index
