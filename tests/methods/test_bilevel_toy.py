"""The penalty method on a bilevel problem with a closed-form solution (float64).

    lower   g(theta, y) = 1/2 ||y - A theta||^2              ->  y*(theta) = A theta
    upper   f(theta, y) = 1/2 ||y - b||^2 + mu/2 ||theta||^2
    bilevel optimum     theta* = (A^T A + mu I)^-1 A^T b

The value-function penalty f + lam (g(theta, p) - min_z g(theta, z)) has its own closed-form minimiser
(a linear system); bilevel-fo and bilevel-zofo must converge to it, and it approaches theta* as lam grows.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.methods.common import method_args
from zofo.methods import METHODS
from zofo.models.adapters import ParamGroups
from zofo.tasks.example import Example
from zofo.tasks.streams import Batches, ExampleStream

A = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5], [0.3, 0.0, 1.0], [0.2, -0.4, 0.6]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)
MU = 0.1


class Toy(nn.Module):
    """theta (the 'backbone') and two copies p, z of the lower variable (the 'adapters')."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(3, dtype=torch.float64), requires_grad=False)
        self.p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
        self.z = nn.Parameter(torch.zeros(4, dtype=torch.float64))

    def forward(self, copy: str) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.p if copy == "p" else self.z
        f = 0.5 * (y - B).square().sum() + 0.5 * MU * self.theta.square().sum()
        g = 0.5 * (y - A @ self.theta).square().sum()
        return f, g


class ToyTerms:
    """f and g of the toy, as `LMTerms` gives them (the inputs carry no data here)."""

    def __init__(self, toy: Toy):
        self.toy = toy

    def loss(self, copy, inputs, part):
        return self.toy(copy)[0 if part == "f" else 1]

    def at_once(self, inputs):
        return (*self.toy("p"), self.toy("z")[1])


def penalty_minimiser(lam: float) -> torch.Tensor:
    """Solve d/dtheta = mu theta - lam A^T (p - A theta) = 0 and d/dp = (p - b) + lam (p - A theta) = 0."""
    n, m = A.shape[1], A.shape[0]
    system = torch.zeros(n + m, n + m, dtype=torch.float64)
    system[:n, :n] = MU * torch.eye(n, dtype=torch.float64) + lam * A.T @ A
    system[:n, n:] = -lam * A.T
    system[n:, :n] = -lam * A
    system[n:, n:] = (1 + lam) * torch.eye(m, dtype=torch.float64)
    rhs = torch.cat([torch.zeros(n, dtype=torch.float64), B])
    return torch.linalg.solve(system, rhs)[:n]


def run_toy(method: str, lam: float, steps: int, lr: float) -> torch.Tensor:
    toy = Toy()
    groups = ParamGroups(backbone={"theta": toy.theta}, adapters={"z": {"z": toy.z}, "p": {"p": toy.p}})
    stream = ExampleStream([Example("x", (" a",), 0)], batch_size=1, seed=0)
    batches = Batches({"upper": stream, "lower": stream}, encode=lambda examples: examples)
    cls = METHODS.get(method)
    args = method_args(cls, lr=lr, lr_upper=1e-2, lr_lower=1e-2, lam=lam, lower_steps=3, steps=steps,
                       schedule="linear", normalize=True, eps=1e-4, seed=1)
    trainer = cls(toy, groups, batches, *args)
    trainer.terms = ToyTerms(toy)
    for step in range(steps):
        trainer.step(step)
    return toy.theta.detach().clone()


def test_penalty_minimiser_tends_to_the_bilevel_optimum():
    star = torch.linalg.solve(A.T @ A + MU * torch.eye(3, dtype=torch.float64), A.T @ B)
    gaps = [(penalty_minimiser(lam) - star).norm().item() for lam in (1.0, 10.0, 100.0, 1000.0)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("method, lr", [("bilevel-fo", 3e-2), ("bilevel-zofo", 0.3)])
def test_bilevel_methods_converge_to_the_penalty_minimiser(method, lr):
    lam = 10.0
    theta = run_toy(method, lam, steps=1500, lr=lr)
    target = penalty_minimiser(lam)
    assert (theta - target).norm() / target.norm() < 0.03, (theta, target)
