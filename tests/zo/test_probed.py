"""Updates along the direction the probes realised (``zo.Probed``) for bf16/fp16 weights."""

import pytest
import torch

from zofo import zo
from zofo.zo.kernels import ops


class Linear(torch.nn.Module):
    """L(w) = g . w in float64 over a low-precision weight whose ulp is about eps (|w| in [0.1, 0.3])."""

    def __init__(self, dtype: torch.dtype, n: int = 4096):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
        self.w = torch.nn.Parameter((sign * (0.1 + 0.2 * torch.rand(n, generator=gen))).to(dtype))
        self.register_buffer("g", torch.randn(n, generator=gen, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return self.g @ self.w.double()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("direction", zo.DIRECTIONS)
@pytest.mark.parametrize("two_sided", [True, False])
def test_c_is_the_slope_along_the_probed_direction(dtype, direction, two_sided):
    model = Linear(dtype)
    params = dict(model.named_parameters())
    eps, seeds = 1e-3, [11, 12, 13]
    est = zo.estimate(model, model, params, seeds, eps=eps, two_sided=two_sided, direction=direction)
    key = zo.tensor_key("w")
    for seed, c in zip(seeds, est.projected_grads, strict=True):
        v = zo.probed_direction(model.w.detach(), key, seed, est.probed, direction).double()
        u = zo.direction_like(model.w, seed, key, direction).double()
        # a linear loss makes the finite difference exact: c is g.v (v in float32) ...
        assert c == pytest.approx((model.g @ v).item(), rel=1e-6)
        # ... and, with one ulp of w near eps, far from the slope along u that a plain update assumes
        if dtype == torch.bfloat16:
            assert abs(c - (model.g @ u).item()) > 0.05 * abs(c)


def test_sgd_moves_bf16_weights_along_the_probed_direction():
    model = Linear(torch.bfloat16)
    params = dict(model.named_parameters())
    est = zo.estimate(model, model, params, [5, 6], eps=1e-3, direction="gaussian")
    theta, key, lr = model.w.detach().clone(), zo.tensor_key("w"), 1e-3
    step = sum(lr * c / 2 * zo.probed_direction(theta, key, s, est.probed) for s, c in
               zip(est.seeds, est.projected_grads, strict=True))
    want = zo.stochastic_round(theta.float() - step, torch.bfloat16, est.seeds[0], key)
    zo.ZOSGD(backend="torch").apply(params, est, lr, zo.UpdateState())
    assert torch.equal(model.w.detach(), want)


@pytest.mark.parametrize("rule", [zo.ZOSGD, zo.ZOMomentum, zo.ZOAdam])
def test_float32_weights_still_move_along_u(rule):
    """v = u up to float32 rounding, so fp32 updates are the plain ones, bit for bit."""
    models = [Linear(torch.float32), Linear(torch.float32)]
    for model, probed in zip(models, [True, False], strict=True):
        params = dict(model.named_parameters())
        est = zo.estimate(model, model, params, [3], eps=1e-3)
        r = rule(probed=probed)
        r.apply(params, est, 1e-3, r.init(params))
    assert torch.equal(models[0].w, models[1].w)


@pytest.mark.parametrize("rule", [zo.ZOMomentum, zo.ZOAdam])
def test_stateful_rules_use_the_probed_direction(rule):
    """Momentum's first step is theta - lr g with g = c v: compared with the fused ZO-SGD step."""
    a, b = Linear(torch.bfloat16), Linear(torch.bfloat16)
    est = zo.estimate(a, a, dict(a.named_parameters()), [8], eps=1e-3)
    key = zo.tensor_key("w")
    v = zo.probed_direction(a.w.detach(), key, 8, est.probed)
    r = rule()
    r.apply(dict(a.named_parameters()), est, 1e-4, r.init(dict(a.named_parameters())))
    moved = (a.w.float() - b.w.float()).detach()
    # the weights moved against the sign of c v wherever they moved (Adam: sign(g); momentum: g)
    changed = moved != 0
    assert changed.any()
    assert (torch.sign(moved[changed]) == -torch.sign(est.projected_grads[0] * v[changed])).float().mean() > 0.99


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rademacher_combination_is_the_sum_over_each_probed_direction(dtype):
    """Two-sided Rademacher v_j are +-v(+1), so the update sums signed coefficients once (16 deferred steps);
    it must equal sum_j c_j v_j taken direction by direction, in float64."""
    w = Linear(dtype).w.detach()
    key, probed = zo.tensor_key("w"), zo.Probed(1e-3, True)
    seeds = list(range(40, 56))
    coefs = torch.randn(16, generator=torch.Generator().manual_seed(1), dtype=torch.float64).mul(1e-4).tolist()
    got = ops.combination(w, key, seeds, coefs, "rademacher", backend="torch", probed=probed).double()
    v = [zo.probed_direction(w, key, s, probed, "rademacher").double() for s in seeds]
    want = sum(c * vj for c, vj in zip(coefs, v, strict=True))
    assert got.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
