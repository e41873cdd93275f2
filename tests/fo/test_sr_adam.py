"""SRAdam: Adam(W)'s arithmetic in float32, and sub-ulp updates that survive in bf16 / fp16 weights in expectation."""

from __future__ import annotations

import pytest
import torch

from zofo.fo.graphed import GraphedStep, init_optimizer_state, load_optimizer_state, make_adam, plain_state_dict
from zofo.fo.sr_adam import CHUNK_ELEMENTS, SRAdam, chunks

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def problem(dtype: torch.dtype, seed: int = 0) -> tuple[list[torch.nn.Parameter], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(6, 4, generator=g).to(dtype)),
              torch.nn.Parameter(torch.randn(9, generator=g).to(dtype))]
    return params, torch.randn(5, 4, generator=g)


def loss_of(params, x) -> torch.Tensor:
    return (x @ params[0].float().T).tanh().pow(2).mean() + (params[1].float() - 0.5).pow(2).sum()


def run(optimizer, params, x, steps: int) -> None:
    for _ in range(steps):
        loss_of(params, x).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("decoupled, kind", [(True, torch.optim.AdamW), (False, torch.optim.Adam)])
def test_float64_weights_follow_torch_adam(decoupled, kind):
    """Rounding to float64 is a plain cast, so the update must be torch's Adam(W), step for step."""
    params, x = problem(torch.float64)
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    run(SRAdam(params, lr=3e-2, weight_decay=0.1, decoupled=decoupled), params, x, 20)
    run(kind(twins, lr=3e-2, weight_decay=0.1), twins, x, 20)
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sub_ulp_updates_are_realised_on_average(dtype):
    """Weights at 1.0 pushed by a constant gradient: each Adam step is lr (m / sqrt(v) = 1 after the bias
    corrections), far below half an ulp of 1.0. After 200 steps the mean weight must be 1 - 200 lr as in float64,
    where torch's AdamW on the same low-precision weights moves nothing."""
    steps, lr, n = 200, 1e-4, 20_000
    want = torch.ones(n, dtype=torch.float64, requires_grad=True)
    mine = torch.nn.Parameter(torch.ones(n, dtype=dtype))
    plain = torch.nn.Parameter(torch.ones(n, dtype=dtype))
    optimizers = [torch.optim.AdamW([want], lr=lr, weight_decay=0), SRAdam([mine], lr=lr),
                  torch.optim.AdamW([plain], lr=lr, weight_decay=0)]
    for _ in range(steps):
        for p, opt in zip([want, mine, plain], optimizers, strict=True):
            p.grad = torch.ones_like(p)
            opt.step()
    assert want.mean().item() == pytest.approx(1 - steps * lr, abs=1e-9)
    assert plain.mean().item() == 1.0  # round to nearest: every update lost
    assert mine.detach().double().mean().item() == pytest.approx(want.mean().item(), abs=2e-4)
    assert mine.dtype == dtype and len(torch.unique(mine)) > 1


def test_state_is_float32_and_the_step_is_reproducible():
    """The moments are float32 whatever the weights; the same seed gives bit-identical weights, another seed
    different rounding."""
    results = []
    for seed in (0, 0, 1):
        params, x = problem(torch.bfloat16)
        optimizer = SRAdam(params, lr=1e-3, seed=seed)
        run(optimizer, params, x, 5)
        assert all(optimizer.state[p]["exp_avg"].dtype == torch.float32 for p in params)
        results.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


@pytest.mark.parametrize("decoupled", [True, False])
def test_chunked_steps_equal_whole_list_steps(decoupled):
    """A step taken a chunk of parameters at a time (bounded float32 scratch) changes no bit against one list: two
    groups, parameters of several sizes, one without a gradient on every other step."""
    results = []
    for limit in (CHUNK_ELEMENTS, 30, 1):
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n, generator=g).to(torch.bfloat16)) for n in (24, 9, 40, 3, 17)]
        optimizer = SRAdam([{"params": params[:3]}, {"params": params[3:], "lr": 3e-3}], lr=1e-3,
                           weight_decay=0.1, decoupled=decoupled, seed=3)
        optimizer.chunk_elements = limit
        for step in range(6):
            loss = sum((p.float() * (i + 1)).sin().sum() for i, p in enumerate(params) if step % 2 or i != 2)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        moments = [optimizer.state[p][k].flatten() for p in params for k in ("exp_avg", "exp_avg_sq")]
        results.append((torch.cat([p.detach().flatten() for p in params]), torch.cat(moments)))
    for weights, moments in results[1:]:
        assert torch.equal(weights, results[0][0]) and torch.equal(moments, results[0][1])


def test_chunks_keep_order_and_bound_each_chunk():
    assert chunks([3, 4, 12, 1, 1, 5, 2], 8) == [range(0, 2), range(2, 3), range(3, 6), range(6, 7)]
    assert chunks([12], 8) == [range(0, 1)] and chunks([], 8) == []
    assert chunks([3, 4, 12], 10**9) == [range(0, 3)]


def test_capturable_steps_equal_plain_steps():
    """Device step counters and a tensor learning rate (what a CUDA graph captures) change no bit."""
    params, x = problem(torch.bfloat16)
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    run(SRAdam(params, lr=1e-3, weight_decay=0.01), params, x, 6)
    run(SRAdam(twins, lr=torch.tensor(1e-3), weight_decay=0.01, capturable=True), twins, x, 6)
    assert all(torch.equal(p, q) for p, q in zip(params, twins, strict=True))


@pytest.mark.parametrize("kind", [torch.optim.AdamW, torch.optim.Adam])
@pytest.mark.parametrize("chunk_elements", [CHUNK_ELEMENTS, 1])
def test_made_ahead_state_and_checkpoints(chunk_elements, kind):
    """init_optimizer_state (all at once or a parameter at a time, decoupled or L2 weight decay) leaves bf16 weights
    bit-identical and the next steps equal a fresh optimizer's; a state saved and loaded continues bit for bit."""
    params, x = problem(torch.bfloat16)
    before = [p.detach().clone() for p in params]
    fresh_params = [torch.nn.Parameter(b.clone()) for b in before]
    run(make_adam(kind, fresh_params, 1e-3, 0.01), fresh_params, x, 3)
    optimizer = make_adam(kind, params, 1e-3, 0.01)
    assert isinstance(optimizer, SRAdam)
    init_optimizer_state(optimizer, chunk_elements)
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    run(optimizer, params, x, 3)
    assert all(torch.equal(p, q) for p, q in zip(params, fresh_params, strict=True))
    state = plain_state_dict(optimizer)
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = make_adam(kind, twins, 1e-3, 0.01)
    load_optimizer_state(resumed, state)
    run(optimizer, params, x, 3)
    run(resumed, twins, x, 3)
    assert all(torch.equal(p, q) for p, q in zip(params, twins, strict=True))


def test_make_adam_keeps_torch_adam_for_float32():
    params, _ = problem(torch.float32)
    assert type(make_adam(torch.optim.AdamW, params, 1e-3)) is torch.optim.AdamW


@cuda
@pytest.mark.gpu
def test_a_captured_bf16_step_equals_the_eager_step():
    """The graphed path (SRAdam captured, its rounding seed read from the device) moves the weights as eager
    steps do, bit for bit. The gradients are given, not computed, so that only the optimizer is compared
    (cuBLAS may pick other kernels under capture)."""
    params, _ = problem(torch.bfloat16)
    params = [torch.nn.Parameter(p.detach().cuda()) for p in params]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    g = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=g).cuda() for p in params] for _ in range(5)]

    def given(ps):
        def backward(inputs):
            for i, p in enumerate(ps):
                p.grad.add_(inputs[f"g{i}"])
            return inputs["g0"].sum()
        return backward

    graphed = GraphedStep(params, make_adam(torch.optim.AdamW, params, 1e-3, 0.01, graphed=True), given(params))
    eager = GraphedStep(twins, make_adam(torch.optim.AdamW, twins, 1e-3, 0.01, graphed=True), given(twins),
                        capture=False)
    for step_grads in grads:
        inputs = {f"g{i}": t for i, t in enumerate(step_grads)}
        graphed(inputs, 1e-3)
        eager(inputs, 1e-3)
    assert graphed.captured == 1
    assert all(torch.equal(p, q) for p, q in zip(params, twins, strict=True))
    assert not all(torch.equal(p.cpu(), q) for p, q in zip(params, problem(torch.bfloat16)[0], strict=True))


def mean_first_step(method) -> float:
    """Mean |change| of the weights that have a gradient, over one step of ``method``."""
    before = {name: p.detach().double() for name, p in method.params.items()}
    method.step(0)
    moved, counted = 0.0, 0
    for name, p in method.params.items():
        has_grad = method.optimizer.state[p]["exp_avg"] != 0
        moved += float((p.detach().double() - before[name]).abs()[has_grad].sum())
        counted += int(has_grad.sum())
    assert counted > 10_000
    return moved / counted


def test_fo_full_in_bf16_takes_adams_first_step_on_average():
    """Adam's first step moves every weight that has a gradient by exactly lr. At lr 1e-5 that is far below half
    an ulp of most bf16 weights; with stochastic rounding the mean |change| must still be lr, where torch's
    AdamW (round to nearest) loses most of it."""
    from tests.methods.common import build

    lr = 1e-5
    method, _ = build("fo-full", dtype=torch.bfloat16, lr=lr)
    assert isinstance(method.optimizer, SRAdam)
    assert mean_first_step(method) == pytest.approx(lr, rel=0.1)
    plain, _ = build("fo-full", dtype=torch.bfloat16, lr=lr)
    plain.optimizer = torch.optim.AdamW(plain.params.values(), lr=lr, weight_decay=0.0)
    assert mean_first_step(plain) < 0.5 * lr


@pytest.mark.parametrize("dtype, kind", [(torch.bfloat16, SRAdam), (torch.float32, torch.optim.Adam)])
def test_bilevel_fo_updates_theta_with_the_low_precision_optimizer(dtype, kind):
    """The first-order bilevel reference trains the backbone too: bf16 weights get SRAdam, float32 torch's Adam."""
    from tests.methods.common import build

    method, _ = build("bilevel-fo", "lora", dtype=dtype, lr=1e-5)
    assert type(method.theta.optimizer) is kind
