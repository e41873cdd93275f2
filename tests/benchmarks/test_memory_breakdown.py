"""benchmarks/memory_breakdown.py: the allocator-trace replay on hand-made traces, and each method's run config."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from benchmarks.memory_breakdown import METHODS, at_peak, run_config

MODEL = [{"filename": "/x/src/zofo/models.py", "line": 40, "name": "load_model"}]
LOSS = [{"filename": "/x/src/zofo/objectives.py", "line": 12, "name": "loss"}]
TORCH = [{"filename": "/t/torch/nn/functional.py", "line": 9, "name": "linear"}]


def alloc(addr: int, size: int, frames: list[dict]) -> dict:
    return {"action": "alloc", "addr": addr, "size": size, "frames": frames}


def free(addr: int, size: int, action: str = "free_requested") -> dict:
    return {"action": action, "addr": addr, "size": size, "frames": []}


def test_the_peak_and_what_was_allocated_at_it():
    trace = [
        alloc(1, 100, MODEL),
        alloc(2, 50, LOSS),
        alloc(3, 30, TORCH),     # 180: the peak
        free(2, 50),
        free(2, 50, "free_completed"),
        alloc(4, 40, LOSS),      # 170
        free(3, 30),
        alloc(5, 60, LOSS),      # 200: the new peak, made of 1, 4 and 5
        free(5, 60),
        free(4, 40),
        {"action": "segment_alloc", "addr": 0, "size": 4096, "frames": []},  # reserved, not allocated
    ]
    peak, by_owner = at_peak(trace)
    assert peak == 200
    assert by_owner == {"zofo/models.py:40 load_model": 100, "zofo/objectives.py:12 loss": 100}


def test_a_block_freed_before_the_trace_began_is_ignored():
    trace = [free(9, 500), alloc(1, 10, TORCH), alloc(2, 20, TORCH), free(1, 10)]
    peak, by_owner = at_peak(trace)
    assert peak == 30
    assert by_owner == {"/t/torch/nn/functional.py:9 linear": 30}


def test_every_method_builds_as_zofo_train_would_with_its_peft_or_none():
    args = Namespace(model="m", task="copa", data_root=Path("data"), data="superglue/COPA")
    kinds = {method: run_config(args, method).peft.kind for method in METHODS}
    assert kinds == {"fo-peft": "lora", "bilevel-zofo": "lora", "zo-peft": "lora", "mezo": None, "fo-full": None}
    assert {method: run_config(args, method).train.method for method in METHODS} == {m: m for m in METHODS}
