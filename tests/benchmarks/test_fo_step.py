"""benchmarks/fo_step.py's timing of Bilevel ZOFO's parts (the benchmark itself needs a GPU)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from tests.methods.common import build, snapshot


def test_part_times_time_the_methods_own_calls_and_change_nothing(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "benchmarks"))
    fo_step = importlib.import_module("fo_step")
    options = dict(lr=1e-3, lr_upper=3e-2, lr_lower=3e-2, lower_steps=2)
    timed, _ = build("bilevel-zofo", "lora", **options)
    plain, _ = build("bilevel-zofo", "lora", **options)
    before = {name: getattr(*fo_step.owner_of(timed, name)) for name in fo_step.BILEVEL_PARTS}
    ms = fo_step.part_times(timed, fo_step.BILEVEL_PARTS, steps=3)
    for i in range(3):
        plain.step(i)
    assert set(ms) == set(fo_step.BILEVEL_PARTS) and all(v > 0 for v in ms.values())
    assert all(getattr(*fo_step.owner_of(timed, n)) == f for n, f in before.items())  # the wrappers are gone
    assert "inputs" not in vars(timed) and "estimate_of" not in vars(timed.theta)  # the class's methods again
    a, b = snapshot(timed.trainable()), snapshot(plain.trainable())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
