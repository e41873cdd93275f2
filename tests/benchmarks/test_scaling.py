"""benchmarks/scaling.py in one process at its tiny shapes: a record per world size, nothing sent at world 1."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.scaling import measure


@pytest.mark.parametrize("mode, shape", [("dp", "opt-1.3b (tiny)"), ("fsdp", "llama-7b (tiny)")])
def test_one_process_measures_a_step_and_sends_nothing(monkeypatch, mode, shape):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = argparse.Namespace(mode=mode, tiny=True, batch=2, length=8, steps=2, warmup=1)
    record = measure(args)
    assert record["shape"] == shape and record["world"] == 1 and record["rank"] == 0
    assert record["step_s"] > 0 and record["sequences_per_s"] == pytest.approx(2 / record["step_s"], rel=0.01)
    assert record["zofo_bytes_per_step"] == 0 and record["fsdp_allgather_bytes_per_step_estimate"] == 0
