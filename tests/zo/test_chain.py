"""Deferred ZO-SGD updates: k steps' (seeds, c) applied in one pass with one rounding (``zo.chain``)."""

import pytest
import torch

from zofo import zo
from zofo.zo.kernels import ops


class Quadratic(torch.nn.Module):
    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1, 1, 257, dtype=torch.float64).to(dtype))

    def forward(self) -> torch.Tensor:
        return (self.w.double() ** 2).sum() + self.w.double().sum()


def test_chain_applies_each_estimate_with_its_own_lr():
    model = Quadratic(torch.float64)
    params = dict(model.named_parameters())
    ests = [zo.estimate(model, model, params, [s, s + 100], eps=1e-4) for s in range(4)]
    lrs = [1e-3, 2e-3, 5e-4, 1e-3]
    expected = model.w.detach().clone()
    for est, lr in zip(ests, lrs, strict=True):  # each update on its own, at the same probed theta
        for seed, c in zip(est.seeds, est.projected_grads, strict=True):
            expected -= lr * c / est.q * zo.direction_like(expected, seed, zo.tensor_key("w")).double()
    chained, lr = zo.chain(ests, lrs)
    assert lr == sum(lrs) and chained.seeds == [s for e in ests for s in e.seeds]
    zo.ZOSGD().apply(params, chained, lr, zo.UpdateState())
    torch.testing.assert_close(model.w.detach(), expected, rtol=0, atol=1e-15)


def test_one_rounding_for_k_updates_is_less_noisy_in_bf16():
    """k sub-ulp updates: k stochastic roundings add k times the rounding variance of one (for random
    directions, sqrt(k) times that of rounding their sum once); both stay unbiased."""
    n, k = 200_000, 16
    theta = torch.full((n,), 0.2, dtype=torch.bfloat16)  # ulp 2**-10 ~ 1e-3
    seeds, coefs = list(range(1, k + 1)), [1e-5] * k  # each step moves ~1% of an ulp
    exact = theta.double() - sum(c * zo.direction_like(theta, s, 3).double() for s, c in zip(seeds, coefs, strict=True))
    one_by_one = theta.clone()
    for s, c in zip(seeds, coefs, strict=True):
        ops.sgd_update_(one_by_one, 3, [s], [c], backend="torch")
    at_once = theta.clone()
    ops.sgd_update_(at_once, 3, seeds, coefs, backend="torch")
    err_seq, err_once = one_by_one.double() - exact, at_once.double() - exact
    assert abs(err_seq.mean()) < 3 * err_seq.std() / n**0.5 and abs(err_once.mean()) < 3 * err_once.std() / n**0.5
    assert err_once.var() < err_seq.var() / 2.5, (err_once.var(), err_seq.var())  # ~ 1 / sqrt(k) = 1/4


def test_chain_refuses_estimates_probed_differently():
    model = Quadratic(torch.float64)
    params = dict(model.named_parameters())
    a = zo.estimate(model, model, params, [1], eps=1e-3)
    for other in (zo.estimate(model, model, params, [2], eps=1e-2),
                  zo.estimate(model, model, params, [2], eps=1e-3, two_sided=False),
                  zo.estimate(model, model, params, [2], eps=1e-3, direction="rademacher")):
        with pytest.raises(ValueError, match="share direction, eps and sidedness"):
            zo.chain([a, other], [1e-3, 1e-3])


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits (torch.equal alone calls -0.0 and 0.0 equal)."""
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


@pytest.mark.parametrize("on_device", [False, True])
def test_chain_of_zero_lrs_keeps_the_probed_c_and_its_update_moves_nothing(on_device):
    """Every pending lr 0 (lr 0, or a schedule that has reached 0): no division by the zero sum, the c are weighted
    as under a constant lr (kept as probed), and the chained update at lr 0 leaves every bit of theta."""
    model = Quadratic(torch.bfloat16)
    with torch.no_grad():
        model.w[:8] = -0.0  # signed zeros: an update that adds lr * c * u = -0.0 or +0.0 may flip them
    params = dict(model.named_parameters())
    ests = [zo.estimate(model, model, params, [s, s + 100], eps=1e-2) for s in range(3)]
    if on_device:
        ests = [zo.DeviceEstimate(e.seeds, torch.tensor(e.losses, dtype=torch.float64).reshape(-1, 1), e.direction,
                                  e.eps, e.two_sided) for e in ests]
    chained, lr = zo.chain(ests, [0.0, 0.0, 0.0])
    constant, _ = zo.chain(ests, [1e-3, 1e-3, 1e-3])
    grads = [torch.as_tensor(c.projected_grads).tolist() for c in (chained, constant)]
    assert lr == 0.0 and grads[0] == grads[1] and any(g != 0 for g in grads[0])
    before = bits(model.w.detach()).clone()
    zo.ZOSGD().apply(params, chained, lr, zo.UpdateState())
    assert torch.equal(bits(model.w.detach()), before)


def test_chain_with_some_zero_lrs_weights_the_others_by_their_lr():
    """A schedule reaching 0 inside a deferred block: the zero-lr steps add nothing, the others their lr_e * c."""
    model = Quadratic(torch.float64)
    params = dict(model.named_parameters())
    ests = [zo.estimate(model, model, params, [s], eps=1e-4) for s in range(3)]
    chained, lr = zo.chain(ests, [2e-3, 0.0, 0.0])
    assert lr == 2e-3 and chained.projected_grads == [3 * ests[0].projected_grads[0], 0.0, 0.0]


@pytest.mark.parametrize("rule", [zo.ZOSGD(weight_decay=0.1), zo.ZOMomentum(weight_decay=0.1), zo.ZOAdam()])
def test_every_rule_at_lr_zero_keeps_every_bit_of_theta(rule):
    """Momentum and Adam still move their state at lr 0 (a warm-up from 0 starts their averages); theta keeps
    every bit, signed zeros included."""
    model = Quadratic(torch.bfloat16)
    with torch.no_grad():
        model.w[:8] = -0.0
    params = dict(model.named_parameters())
    before, state = bits(model.w.detach()).clone(), rule.init(params)
    for seed in range(3):
        state = rule.apply(params, zo.estimate(model, model, params, [seed], eps=1e-2), 0.0, state)
    assert torch.equal(bits(model.w.detach()), before) and state.step == 3
    assert all(b.abs().sum() > 0 for b in state.buffers.get("w", {}).values())
