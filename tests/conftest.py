"""Shared fixtures: a tiny word-level tokenizer, tiny random models, the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors in its interpreter; the switch must precede triton's first import,
    # which any test that reaches zofo.zo.kernels.ops may cause, so it is set here, before every test module.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.tiny import SHARED_DATA, build_tiny_tokenizer, tiny_model


@pytest.fixture
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A saved tiny Llama with its tokenizer, loadable by zofo.load_model."""
    tokenizer = build_tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path / "tiny-llama")
    tokenizer.save_pretrained(tmp_path / "tiny-llama")
    return tmp_path / "tiny-llama"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set ZOFO_SHARED_DATA)")
    return SHARED_DATA
