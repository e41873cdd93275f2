import pytest
import torch

from tests.zo.zo_models import lm_loss, tiny_llama
from zofo import zo


def test_stochastic_rounding_is_unbiased():
    x = torch.full((200_000,), 0.03, dtype=torch.float32) + 1e-6  # 1e-6 ~ 0.008 bf16 ulps above 0.03
    rne = x.to(torch.bfloat16).float()
    sr = zo.stochastic_round(x, torch.bfloat16, seed=5, key=9).float()
    ulp = 2.0**-13
    assert abs(rne.mean() - x.mean()) > 0.007 * ulp  # round-to-nearest loses the whole increment
    assert abs(sr.mean().double() - x.double().mean()) < 0.0015 * ulp
    y = torch.full((200_000,), 1.0 + 2**-12, dtype=torch.float32)  # 0.25 fp16 ulp above 1
    h = zo.stochastic_round(y, torch.float16, seed=1, key=2).float()
    assert abs(h.mean() - y.mean()) < 0.01 * 2**-10


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_in_pieces_equals_one_piece(dtype):
    """Rounded in cache-sized pieces, a tensor larger than a piece (at an offset) gets the bits of one piece."""
    from zofo.zo.directions import chunk_size, rounding_bits
    from zofo.zo.rounding import _sr_bf16, _sr_fp16, stochastic_round

    n, start = chunk_size(torch.device("cpu")) + 1234, 77
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)) * 0.03
    whole = (_sr_bf16 if dtype == torch.bfloat16 else _sr_fp16)(x, rounding_bits(9, 4, start, start + n))
    assert torch.equal(stochastic_round(x.view(2, -1), dtype, 9, 4, start).view(-1), whole)  # 2-D, n even


def test_sub_ulp_updates_survive_in_bf16():
    w = torch.nn.Parameter(torch.full((4096,), 0.03, dtype=torch.bfloat16))
    params = {"w": w}
    rule = zo.ZOSGD()
    for step in range(100):  # u = +-1: push each element by 1e-6 * u per step
        est = zo.ZOEstimate([zo.step_seed(0, step)], [1.0], [0.0], "rademacher")
        rule.apply(params, est, 1e-6, zo.UpdateState())
        u = zo.direction_like(w, est.seeds[0], zo.tensor_key("w"), "rademacher")
        if step == 0:
            total = torch.zeros_like(u)
        total -= 1e-6 * u
    realised = (w.float() - 0.03).double().mean() / (total.double().mean() + 1e-30)
    drift = (w.float() - (torch.tensor(0.03).bfloat16().float() + total)).abs().mean()
    assert drift < 1e-4 and abs(realised) > 0  # tracks the exact trajectory on average


@pytest.mark.parametrize("rule", [zo.ZOSGD(), zo.ZOMomentum(), zo.ZOAdam()])
def test_mezo_loop_lowers_training_loss(rule, batch):
    model = tiny_llama()
    params = dict(model.named_parameters())
    lr = {zo.ZOSGD: 2e-3, zo.ZOMomentum: 3e-4, zo.ZOAdam: 3e-3}[type(rule)]
    state = rule.init(params)
    with torch.no_grad():
        start = lm_loss(model, batch).item()
    for step in range(50):
        seeds = [zo.step_seed(0, step, i) for i in range(4)]
        est = zo.estimate(lambda: lm_loss(model, batch), model, params, seeds, eps=1e-3)
        state = rule.apply(params, est, lr, state)
    with torch.no_grad():
        end = lm_loss(model, batch).item()
    assert end < start - 0.02, (start, end)
    assert state.step == 50


@pytest.mark.parametrize("rule", [zo.ZOMomentum(), zo.ZOAdam()])
def test_state_dict_round_trip(rule, batch):
    model = tiny_llama()
    params = dict(model.named_parameters())
    state = rule.init(params)
    for step in range(3):
        est = zo.estimate(lambda: lm_loss(model, batch), model, params, [step], eps=1e-3)
        state = rule.apply(params, est, 1e-3, state)
    saved = {k: v for k, v in state.state_dict().items()}
    saved = {
        "step": saved["step"],
        "buffers": {n: {k: t.clone() for k, t in b.items()} for n, b in saved["buffers"].items()},
    }
    fresh = rule.init(params)
    fresh.load_state_dict(saved)
    assert fresh.step == 3
    for n, b in state.buffers.items():
        for k, t in b.items():
            assert torch.equal(fresh.buffers[n][k], t)
    est = zo.estimate(lambda: lm_loss(model, batch), model, params, [9], eps=1e-3)
    snap = {n: p.detach().clone() for n, p in params.items()}
    rule.apply(params, est, 1e-3, state)
    after_a = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(snap[n])
    rule.apply(params, est, 1e-3, fresh)
    assert all(torch.equal(p, after_a[n]) for n, p in params.items())


def test_schedules():
    assert zo.constant(1e-3)(100) == 1e-3
    assert zo.constant(1.0, warmup=4)(1) == 0.5
    lin = zo.linear(1.0, total_steps=10)
    assert lin(0) == 1.0 and lin(5) == 0.5 and lin(10) == 0.0
    cos = zo.cosine(1.0, total_steps=10, warmup=2)
    assert cos(0) == 0.5 and cos(2) == 1.0 and abs(cos(6) - 0.5) < 1e-12 and cos(20) == 0.0
