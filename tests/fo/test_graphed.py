"""graphed_step: the optimizer state made ahead of a capture changes nothing, and a graphed FO step (and
Bilevel ZOFO's graphed lower step, p-step and probes) computes what the eager step computes."""

from __future__ import annotations

import pytest
import torch

from tests.methods.common import EXAMPLES, build
from zofo.evaluation.static import to_static
from zofo.fo.graphed import (
    GraphedStep,
    init_optimizer_state,
    load_optimizer_state,
    make_adam,
    plain_state_dict,
    set_lr,
)
from zofo.methods.base import batch_loss
from zofo.models.work import WorkCounter, count_replayed, uncounted

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def params_and_data(seed: int = 0) -> tuple[list[torch.nn.Parameter], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(7, generator=g))]
    return params, torch.randn(4, 3, generator=g)


def loss_of(params, x) -> torch.Tensor:
    return ((x @ params[0].T).tanh().sum(1, keepdim=True) * params[1][:1]).pow(2).mean() + params[1].pow(2).sum()


def take_steps(optimizer, params, x, n: int) -> None:
    for _ in range(n):
        loss_of(params, x).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("chunk_elements", [1 << 26, 1])
@pytest.mark.parametrize("kind, weight_decay", [(torch.optim.Adam, 0.0), (torch.optim.Adam, 0.1),
                                                 (torch.optim.AdamW, 0.1)])
def test_init_optimizer_state_changes_nothing(kind, weight_decay, chunk_elements):
    """Made-ahead state, all at once or a parameter at a time: parameters bit-identical, and the next steps equal a
    fresh optimizer's, bit for bit."""
    params, x = params_and_data()
    before = [p.detach().clone() for p in params]
    ahead = kind(params, lr=1e-2, weight_decay=weight_decay)
    init_optimizer_state(ahead, chunk_elements)
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert all(p.grad is None for p in params)
    assert all(float(ahead.state[p]["step"]) == 0 for p in params)
    take_steps(ahead, params, x, 3)

    fresh_params = [torch.nn.Parameter(b.clone()) for b in before]
    take_steps(kind(fresh_params, lr=1e-2, weight_decay=weight_decay), fresh_params, x, 3)
    assert all(torch.equal(p, q) for p, q in zip(params, fresh_params, strict=True))


def test_init_optimizer_state_leaves_existing_state_alone():
    params, x = params_and_data()
    optimizer = torch.optim.Adam(params[:1], lr=1e-2)
    take_steps(optimizer, params, x, 2)
    optimizer.add_param_group({"params": params[1:]})
    kept = {k: v.clone() for k, v in optimizer.state[params[0]].items()}
    loss_of(params, x).backward()
    grads = [p.grad.clone() for p in params]
    init_optimizer_state(optimizer)
    assert all(torch.equal(optimizer.state[params[0]][k], v) for k, v in kept.items())
    assert float(optimizer.state[params[1]]["step"]) == 0
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))


def test_init_optimizer_state_makes_the_state_of_parameters_with_only_an_empty_entry():
    """Reading `optimizer.state[p]` leaves an empty entry (a defaultdict): the state must still be made ahead, or
    Adam makes it lazily inside the first captured step, and every replay resets the moments."""
    params, _ = params_and_data()
    optimizer = torch.optim.Adam(params, lr=1e-2)
    assert all(not optimizer.state[p] for p in params)  # the reads leave empty entries behind
    init_optimizer_state(optimizer)
    for p in params:
        assert set(optimizer.state[p]) >= {"step", "exp_avg", "exp_avg_sq"} and float(optimizer.state[p]["step"]) == 0


def test_eager_graphed_step_equals_the_plain_step():
    """GraphedStep without capture (any CPU run) is zero grads, backward, step: bit for bit the plain loop."""
    params, x = params_and_data()
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)

    def backward(inputs):
        loss = loss_of(params, inputs["x"])
        loss.backward()
        return loss.detach()

    step = GraphedStep(params, optimizer, backward)
    assert not step.capture
    plain = torch.optim.AdamW(twins, lr=1e-2, weight_decay=0.1)
    for i, lr in enumerate([1e-2, 5e-3, 2e-3]):
        got = step({"x": x}, lr)
        set_lr(plain, lr)
        want = loss_of(twins, x)
        want.backward()
        plain.step()
        plain.zero_grad(set_to_none=True)
        assert torch.equal(got, want.detach()), i
        assert all(torch.equal(p, q) for p, q in zip(params, twins, strict=True)), i
    assert step.captured == 0


def test_tensor_learning_rate_survives_a_checkpoint():
    """A captured graph reads the lr tensor: saving writes a float, loading refills the same tensor."""
    params, x = params_and_data()
    lr = torch.tensor(1e-2)
    optimizer = torch.optim.Adam(params, lr=lr, foreach=False)
    take_steps(optimizer, params, x, 1)
    state = plain_state_dict(optimizer)
    assert state["param_groups"][0]["lr"] == pytest.approx(1e-2)
    state["param_groups"][0]["lr"] = 3e-3
    load_optimizer_state(optimizer, state)
    assert optimizer.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(3e-3)
    set_lr(optimizer, 4e-3)
    assert optimizer.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(4e-3)


def test_make_adam_kinds():
    params, _ = params_and_data()
    plain = make_adam(torch.optim.AdamW, params, 1e-3, 0.01)
    assert plain.param_groups[0]["lr"] == 1e-3 and not plain.param_groups[0]["capturable"]
    graphed = make_adam(torch.optim.Adam, params, 1e-3, graphed=True)
    group = graphed.param_groups[0]
    assert isinstance(group["lr"], torch.Tensor) and group["capturable"] and group["foreach"]


def test_fo_static_backward_gives_the_eager_gradient():
    """The fixed-shape loss a graph replays has the eager loss's value and gradient."""
    trainer, encode = build("fo-peft", "lora", lr_upper=1e-2)
    batch = encode(EXAMPLES)
    loss = trainer.static_backward(to_static(batch).tensors())
    static_grads = {n: p.grad.clone() for n, p in trainer.params.items()}
    for p in trainer.params.values():
        p.grad = None
    want = batch_loss(trainer.model, batch, "ce")
    want.backward()
    torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-6)
    for name, p in trainer.params.items():
        torch.testing.assert_close(static_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("peft", ["lora", "prompt"])
def test_bilevel_static_terms_equal_the_eager_ones(peft):
    """F and the p-step's backward over fixed-shape B_f, B_g (what a graph replays: three forwards) equal the same
    functions over the examples (the eager mixed batch); so do p's grads."""
    trainer, _ = build("bilevel-zofo", peft, lr=1e-3, lower_steps=1)
    parts = dict(f=trainer.batches.examples("upper"), g=trainer.batches.examples("lower"))
    eager = trainer.inputs(**parts)
    trainer.graphed = True  # lays the batches out at fixed shapes (on CPU nothing is captured)
    static = trainer.inputs(**parts)
    assert set(eager) == {"f", "g"} and "f.input_ids" in static
    with torch.no_grad():
        torch.testing.assert_close(trainer.penalty(static), trainer.penalty(eager), rtol=1e-5, atol=1e-6)
    p = trainer.groups.adapter("p")
    values = trainer.upper_backward(static)
    static_grads = {n: t.grad.clone() for n, t in p.items()}
    for t in p.values():
        t.grad = None
    f = trainer.terms.loss("p", parts, "f")
    f.backward()
    g_p = trainer.terms.loss("p", parts, "g")
    (trainer.lam * g_p).backward()
    torch.testing.assert_close(values, torch.stack([f, g_p]).detach(), rtol=1e-5, atol=1e-6)
    for name, t in p.items():
        torch.testing.assert_close(static_grads[name], t.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_uncounted_passes_are_not_work():
    trainer, encode = build("mezo", lr=1e-2)
    counter = WorkCounter(trainer.model)
    with counter.counting(), torch.no_grad():
        with uncounted():
            trainer.model(input_ids=torch.ones(3, 4, dtype=torch.long))
            count_replayed(7, 7)
        trainer.model(input_ids=torch.ones(2, 4, dtype=torch.long))
        count_replayed(5, 3)  # what a CUDA-graph replay reports
    count_replayed(11, 11)  # no counter active: nobody's work
    counter.close()
    assert (counter.work.forward_rows, counter.work.backward_rows) == (2 + 5, 3)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("method, peft, options", [
    ("fo-peft", "lora", dict(lr_upper=1e-2)),
    ("fo-full", "lora", dict(lr=1e-3, weight_decay=0.01)),
    ("fo-peft", "prompt", dict(lr_upper=1e-2)),
])
def test_graphed_fo_steps_equal_eager_steps(method, peft, options):
    """Replayed steps compute the eager step's losses, and move the weights as eager steps of the same
    fixed-shape loss and capturable AdamW do.

    PEFT: every tensor to 1e-5. Full fine-tuning: run 16 saw the embedding differ by 2.4e-4 after 4 steps at
    lr 1e-3, while two eager runs agreed bit for bit. The graph's kernels round differently somewhere (not
    pinned down; cuBLAS may choose other kernels under capture), and Adam turns the rounding of a gradient
    that cancels to ~0 into a step of about +-lr. There the whole update must point the same way (cosine
    > 0.999) and no weight may differ by more than Adam can move it (about lr per step)."""
    graphed, _ = build(method, peft, device="cuda", **options)
    eager, _ = build(method, peft, device="cuda", **options)
    start = {n: p.detach().clone() for n, p in eager.params.items()}
    eager.graphed.capture = False
    steps = 4
    losses = [(float(graphed.step(i)["loss"]), float(eager.step(i)["loss"])) for i in range(steps)]
    assert graphed.graphed.capture and graphed.graphed.captured == 1
    for got, want in losses:
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert losses[-1][0] < losses[0][0]
    if method != "fo-full":
        for name, p in graphed.params.items():
            torch.testing.assert_close(p, eager.params[name], rtol=1e-5, atol=1e-6, msg=name)
        return
    moved = torch.cat([(graphed.params[n] - start[n]).flatten().float() for n in start])
    want = torch.cat([(eager.params[n] - start[n]).flatten().float() for n in start])
    assert torch.nn.functional.cosine_similarity(moved, want, dim=0) > 0.999
    assert (moved - want).abs().max() <= 2 * steps * options["lr"]


@pytest.mark.gpu
@cuda
def test_graphed_bilevel_steps_equal_eager_steps_and_count_their_rows():
    """Bilevel ZOFO with its lower steps, p-step and probes replayed trains like the eager method (within
    float rounding of the two batch layouts), and its replays count the rows the eager step counts."""
    runs = {}
    for graphs in (True, False):
        trainer, _ = build("bilevel-zofo", "lora", device="cuda", lr=1e-3, lower_steps=2, cuda_graphs=graphs)
        counter = WorkCounter(trainer.model)
        with counter.counting():  # the graphs count their replays themselves
            logs = [trainer.step(i) for i in range(3)]
        counter.close()
        runs[graphs] = trainer, logs, (counter.work.forward_rows, counter.work.backward_rows)
    (graphed, glogs, gwork), (eager, elogs, ework) = runs[True], runs[False]
    assert graphed.lower.captured == graphed.upper.captured == graphed.probes.captured == 1
    assert gwork == ework
    for g, e in zip(glogs, elogs, strict=True):
        for key in ("loss", "g_p", "g_z", "penalty"):
            assert float(g[key]) == pytest.approx(float(e[key]), rel=1e-4, abs=1e-5), key
    for name, p in graphed.trainable().items():
        torch.testing.assert_close(p, eager.trainable()[name], rtol=1e-4, atol=1e-5, msg=name)
    fresh, _ = build("bilevel-zofo", "lora", device="cuda")
    assert any(not torch.equal(fresh.trainable()[n], p) for n, p in graphed.groups.adapter("p").items())
