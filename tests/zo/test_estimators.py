import math

import pytest
import torch

from zofo import zo


class Quadratic(torch.nn.Module):
    """L(w) = 1/2 w^T A w + b^T w, grad = A w + b (float64)."""

    def __init__(self, n: int = 6):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        m = torch.randn(n, n, generator=g, dtype=torch.float64)
        self.register_buffer("a", m @ m.T / n + torch.eye(n, dtype=torch.float64))
        self.register_buffer("b", torch.randn(n, generator=g, dtype=torch.float64))
        self.w = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w + self.b @ self.w

    def grad(self) -> torch.Tensor:
        return self.a @ self.w.detach() + self.b


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
@pytest.mark.parametrize("two_sided", [True, False])
def test_unbiased_on_quadratic(direction, two_sided):
    model = Quadratic()
    params = dict(model.named_parameters())
    seeds = [zo.step_seed(3, 0, i) for i in range(500)]
    est = zo.estimate(model, model, params, seeds, eps=1e-4, two_sided=two_sided, direction=direction)
    key = zo.tensor_key("w")
    u = torch.stack([zo.direction_like(model.w, s, key, direction).double() for s in seeds])
    g_hat = (torch.tensor(est.projected_grads, dtype=torch.float64)[:, None] * u).mean(0)
    true = model.grad()
    assert (g_hat - true).norm() / true.norm() < 0.35  # ~ sqrt((n + 2) / q) relative noise
    # on a quadratic, central differences are exact; forward differences add eps/2 u^T A u
    exact_c = u @ true + (0 if two_sided else 0.5e-4 * torch.einsum("qi,ij,qj->q", u, model.a, u))
    torch.testing.assert_close(torch.tensor(est.projected_grads, dtype=torch.float64), exact_c, atol=1e-7, rtol=1e-7)


def test_two_sided_losses_layout_and_vector_terms():
    model = Quadratic()
    params = dict(model.named_parameters())
    est = zo.estimate(lambda: torch.stack([model(), 2 * model()]), model, params, [1, 2], eps=1e-3)
    assert len(est.losses) == 4 and len(est.terms) == 4 and len(est.terms[0]) == 2
    assert math.isclose(est.losses[0], sum(est.terms[0]))
    one = zo.estimate(model, model, params, [1, 2], eps=1e-3)
    assert est.projected_grads == pytest.approx([3 * c for c in one.projected_grads], rel=1e-9)


def test_non_finite_loss_is_skipped_not_raised():
    model = Quadratic()
    params = dict(model.named_parameters())
    est = zo.estimate(lambda: model() * float("nan"), model, params, [1], eps=1e-3)
    assert est.skipped and est.projected_grads == [0.0]
    before = model.w.detach().clone()
    zo.ZOSGD().apply(params, est, 1.0, zo.UpdateState())
    assert torch.equal(model.w, before)


def test_accumulate_sums_per_seed():
    model = Quadratic()
    params = dict(model.named_parameters())
    a = zo.estimate(model, model, params, [1, 2], eps=1e-3)
    b = zo.estimate(lambda: 3 * model(), model, params, [1, 2], eps=1e-3)
    acc = zo.accumulate([a, b])
    assert acc.projected_grads == pytest.approx([4 * c for c in a.projected_grads])
    with pytest.raises(ValueError, match="share seeds, direction, eps and sidedness"):
        zo.accumulate([a, zo.estimate(model, model, params, [5, 6], eps=1e-3)])
    with pytest.raises(ValueError, match="share seeds, direction, eps and sidedness"):  # same seeds, other eps
        zo.accumulate([a, zo.estimate(model, model, params, [1, 2], eps=1e-2)])
