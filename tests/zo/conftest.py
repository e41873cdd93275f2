"""Fixtures for the ZO engine tests: tiny models built from a config (no downloads)."""

import pytest
import torch


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread (OpenMP spin-waiting makes 10 us matmuls take 10 ms on busy cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
