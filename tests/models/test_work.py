"""zofo.models.work: sequences through the model per training step, the same count for every method."""

from __future__ import annotations

import pytest
import torch

from tests.methods.common import EXAMPLES, build
from zofo.models.work import WorkCounter

ROWS = 2 * len(EXAMPLES)  # every tiny example has two candidates: one row each


@pytest.mark.parametrize("method, peft, options, forward, backward", [
    ("mezo", None, dict(lr=1e-2), 2 * ROWS, 0),                                   # two probes, no backward
    ("mezo", None, dict(lr=1e-2, q=3, two_sided=False), 4 * ROWS, 0),             # L(theta) + three probes
    ("fo-peft", "lora", dict(lr_upper=1e-2), ROWS, ROWS),
    # K = 2 lower steps on B_g, grad_p of f and g on B_f, B_g, then two probes of one mixed forward [B_f; B_g; B_g]
    ("bilevel-zofo", "lora", dict(lr=1e-3, lower_steps=2), 2 * ROWS + 2 * ROWS + 2 * 3 * ROWS, 4 * ROWS),
])
def test_rows_per_step(method, peft, options, forward, backward):
    trainer, _ = build(method, peft or "lora", **options)
    counter = WorkCounter(trainer.model)
    with counter.counting():
        trainer.step(0)
        trainer.step(1)
    with torch.no_grad():
        trainer.model(input_ids=torch.ones(3, 4, dtype=torch.long))  # outside counting(): not counted
    counter.close()
    assert (counter.work.forward_rows, counter.work.backward_rows) == (2 * forward, 2 * backward)
