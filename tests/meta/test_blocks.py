"""Per-task PEFT blocks: stored off the device, swapped in and out bit for bit, saved and restored bit for bit,
and the model holds one task's adapters however many tasks there are."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_model
from zofo.errors import ZofoError
from zofo.meta.blocks import TaskBlocks
from zofo.models.adapters import attach_adapters, peft_config


def setup(n_tasks: int):
    """A tiny Llama with the named LoRA adapters z and p, one Adam per adapter, blocks for n tasks."""
    torch.manual_seed(0)
    model, groups = attach_adapters(tiny_model("llama", vocab_size=40), peft_config("lora", r=4), ("z", "p"))
    params = groups.adapter("z") | groups.adapter("p")
    optimizers = [torch.optim.Adam(list(groups.adapter(name).values()), lr=1e-2) for name in ("z", "p")]
    blocks = TaskBlocks([f"task{i}" for i in range(n_tasks)], params, optimizers)
    return model, params, optimizers, blocks


def train_a_step(model, optimizers, seed: int) -> None:
    ids = torch.randint(4, 40, (2, 6), generator=torch.Generator().manual_seed(seed))
    for name, optimizer in zip(("z", "p"), optimizers, strict=True):
        model.set_adapter(name)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def snapshot(params, optimizers) -> dict:
    out = {f"param:{n}": p.detach().clone() for n, p in params.items()}
    for k, opt in enumerate(optimizers):
        for i, state in enumerate(opt.state.values()):
            out |= {f"opt{k}:{i}:{key}": v.clone() for key, v in state.items()}
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_stored_tensor_is_on_the_host_and_apart_from_the_models():
    model, params, optimizers, blocks = setup(3)
    blocks.swap_in("task0")
    train_a_step(model, optimizers, 0)
    blocks.swap_out("task0")
    stored = [*blocks.values.values(), *(s for by_key in blocks.states.values() for s in by_key.values())]
    assert stored and all(t.device.type == "cpu" for t in stored)
    assert all(t.is_pinned() == torch.cuda.is_available() for t in stored)
    on_model = {p.data_ptr() for p in model.parameters()}
    assert not on_model & {t.data_ptr() for t in stored}
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(next(iter(blocks.states.values())))


def test_the_model_holds_one_tasks_adapters_whatever_the_number_of_tasks():
    model_few, _, _, few = setup(2)
    model_many, _, _, many = setup(50)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model_few) == count(model_many)
    one_task = sum(p.numel() * p.element_size() for p in few.params.values())
    assert few.host_bytes() == 2 * one_task and many.host_bytes() == 50 * one_task


def test_swapping_round_trips_bit_for_bit_and_tasks_keep_their_own_state():
    model, params, optimizers, blocks = setup(2)
    initial = snapshot(params, optimizers)
    blocks.swap_in("task0")
    train_a_step(model, optimizers, 0)
    after_task0 = snapshot(params, optimizers)
    blocks.swap_out("task0")
    blocks.swap_in("task1")  # fresh: the initial values and a zero optimizer state
    assert all(torch.equal(p, initial[f"param:{n}"]) for n, p in params.items())
    assert all(not v.any() for opt in optimizers for state in opt.state.values() for v in state.values())
    train_a_step(model, optimizers, 1)
    after_task1 = snapshot(params, optimizers)
    assert not same(after_task0, after_task1)
    blocks.swap_out("task1")
    blocks.swap_in("task0")
    assert same(snapshot(params, optimizers), after_task0)
    blocks.swap_out("task0")
    blocks.swap_in("task1")
    assert same(snapshot(params, optimizers), after_task1)


def test_a_fresh_task_trains_exactly_as_a_fresh_optimizer_would():
    model, params, optimizers, blocks = setup(2)
    blocks.swap_in("task0")
    train_a_step(model, optimizers, 0)
    blocks.swap_out("task0")
    blocks.swap_in("task1")
    train_a_step(model, optimizers, 7)
    via_blocks = snapshot(params, optimizers)
    model2, params2, optimizers2, _ = setup(2)
    train_a_step(model2, optimizers2, 7)
    assert same(via_blocks, snapshot(params2, optimizers2))


def test_swapping_never_leaves_an_empty_optimizer_state_behind():
    """Swapping reads the optimizers' states without creating entries, so that `init_optimizer_state` still sees a
    fresh optimizer's parameters as missing (before a CUDA graph is captured)."""
    _, params, optimizers, blocks = setup(2)
    blocks.swap_in("task0")
    blocks.swap_out("task0")
    assert all(len(opt.state) == 0 for opt in optimizers)


def test_state_dict_restores_every_block_bit_for_bit():
    model, params, optimizers, blocks = setup(3)
    for i in range(3):
        blocks.swap_in(f"task{i}")
        train_a_step(model, optimizers, i)
        blocks.swap_out(f"task{i}")
    blocks.swap_in("task1")
    expected = snapshot(params, optimizers)
    blocks.swap_out("task1")
    saved = {k: v for k, v in blocks.state_dict().items()}
    saved = torch.load(_roundtrip(saved), weights_only=True)
    _, params2, optimizers2, restored = setup(3)  # a new process: optimizers without state yet
    restored.load_state_dict(saved)
    restored.swap_in("task1")
    assert same(snapshot(params2, optimizers2), expected)


def _roundtrip(state: dict):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_misuse_is_refused():
    _, _, _, blocks = setup(2)
    blocks.swap_in("task0")
    with pytest.raises(ZofoError, match="task 'task0' is still swapped in"):
        blocks.swap_in("task1")
    with pytest.raises(ZofoError, match="task 'task1' is not the one swapped in"):
        blocks.swap_out("task1")
    with pytest.raises(ZofoError, match="swap it out before saving"):
        blocks.state_dict()
    blocks.swap_out("task0")
    with pytest.raises(ZofoError, match="no PEFT block for task 'other'"):
        blocks.swap_in("other")
    with pytest.raises(ZofoError, match="other tasks or other adapter parameters"):
        blocks.load_state_dict(setup(3)[3].state_dict())
