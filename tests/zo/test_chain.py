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
