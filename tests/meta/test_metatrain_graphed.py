"""Meta-training on a CUDA device replays its FO steps and probes as CUDA graphs: the same training as the eager
steps (fixed-shape batches round the last bits differently), each batch shape captured once, blocks swapped into
the tensors the graphs read. Also what the grid makes of the pool's batches (CPU)."""

from __future__ import annotations

import pytest
import torch

from tests.meta.test_metatrain import tiny_method
from zofo.meta.metatrain import GRID_WIDTH, MetaOptions, grid_of

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_the_grid_rounds_candidates_to_a_power_of_two_and_width_to_the_grid_width():
    method = tiny_method(3, MetaOptions(tasks_per_step=2, lower_steps=1))
    for task, candidates in (("task0", 2), ("task1", 4), ("task2", 4)):  # 2, up to 3, 3 candidates
        batch = method.task_batch(task)["g"]
        grid = grid_of(batch)
        examples = batch.labels.shape[0]
        assert grid["candidate_mask"].shape == (examples, candidates)
        assert grid["input_ids"].shape == (examples * candidates, GRID_WIDTH)
        assert int(grid["candidate_mask"].sum()) == batch.input_ids.shape[0]  # every real row, once


def test_off_the_gpu_and_in_pieces_the_steps_run_eagerly():
    assert not tiny_method(2, MetaOptions(tasks_per_step=2)).graphed  # CPU
    if torch.cuda.is_available():
        assert not tiny_method(2, MetaOptions(tasks_per_step=2, max_rows=2), device="cuda").graphed
        assert not tiny_method(2, MetaOptions(tasks_per_step=2, cuda_graphs=False), device="cuda").graphed


@cuda
def test_graphed_meta_steps_follow_the_eager_steps():
    options = dict(tasks_per_step=2, lower_steps=2, lr=1e-3, lr_upper=1e-2, lr_lower=1e-2)
    runs = {graphs: tiny_method(3, MetaOptions(**options, cuda_graphs=graphs), device="cuda")
            for graphs in (True, False)}
    graphed, eager = runs[True], runs[False]
    assert graphed.graphed and not eager.graphed
    for step in range(6):
        logged = {graphs: method.step(step) for graphs, method in runs.items()}
        assert logged[True]["tasks"] == logged[False]["tasks"]
        assert float(logged[True]["projected_grad"]) == pytest.approx(float(logged[False]["projected_grad"]),
                                                                       rel=1e-2, abs=1e-3)
        assert float(logged[True]["loss"]) == pytest.approx(float(logged[False]["loss"]), rel=1e-4)
    # every step was replayed (no capture fell back to eager), at most one graph per grid shape and kind
    assert graphed.lower.capture and graphed.upper.capture and graphed.probes.capture
    assert 1 <= graphed.lower.captured <= 2 and 1 <= graphed.probes.captured <= 2
    for name, param in graphed.theta.items():
        torch.testing.assert_close(param, eager.theta[name], atol=1e-5, rtol=0)
    moved = [(graphed.blocks.values[n] - eager.blocks.values[n]).abs() for n in graphed.blocks.values]
    assert all(gap.median() < 1e-5 for gap in moved)  # Adam may round a near-zero gradient the other way
    assert graphed.blocks.started.sum() == eager.blocks.started.sum() >= 2
