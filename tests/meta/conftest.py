"""Fixtures of the meta-learning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.meta.test_split import write_task


@pytest.fixture
def tasks(tmp_path) -> Path:
    """A folder of two tasks, with words the tiny tokenizer knows."""
    write_task(tmp_path / "tasks" / "films", 20, "the film was")
    write_task(tmp_path / "tasks" / "premises", 10, "premise is true")
    return tmp_path / "tasks"
