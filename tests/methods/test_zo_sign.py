"""ZO-SignSGD: one step moves theta by -lr * (1/q) sum_i sign(c_i) u_i, checked against the same step computed
independently (each c_i from two functional forwards at theta +- eps u_i, u_i drawn from its seed)."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.methods.common import EXAMPLES, build, deployed_loss, snapshot
from zofo import zo
from zofo.methods.base import batch_loss
from zofo.zo.optimizer import rule_of


def expected_step(trainer, encode, theta: dict[str, torch.Tensor], lr: float, eps: float, q: int):
    """theta - lr * (1/q) sum_i sign(c_i) u_i, with c_i = (L(theta + eps u_i) - L(theta - eps u_i)) / (2 eps)."""
    batch = encode(EXAMPLES)
    twin = copy.deepcopy(trainer.model)  # evaluated at theta +- eps u by plain weight copies, not by zo's probes
    weights = dict(twin.named_parameters())
    step = {n: torch.zeros_like(t) for n, t in theta.items()}
    slopes = []
    for i in range(q):
        seed = zo.step_seed(trainer.settings.seed, 0, i)
        u = {n: zo.direction_like(t, seed, zo.tensor_key(n), "gaussian") for n, t in theta.items()}
        with torch.no_grad():
            losses = []
            for sign in (1, -1):
                for n, t in theta.items():
                    weights[n].copy_(t + sign * eps * u[n])
                losses.append(batch_loss(twin, batch, "ce"))
        slopes.append(((losses[0] - losses[1]) / (2 * eps)).item())
        for n in theta:
            step[n] += torch.sign(torch.tensor(slopes[-1])) * u[n] / q
    return {n: t - lr * step[n] for n, t in theta.items()}, slopes


@pytest.mark.parametrize("q", [1, 3])
def test_a_step_follows_the_sign_of_each_projected_gradient(q):
    lr, eps = 1e-3, 1e-3
    trainer, encode = build("zo-sign", lr=lr, eps=eps, q=q)
    theta = snapshot(trainer.groups.backbone)
    want, slopes = expected_step(trainer, encode, theta, lr, eps, q)
    logged = trainer.step(0)
    assert all(abs(c) > 1e-3 and abs(c) != 1.0 for c in slopes)  # sign(c) differs from c: the test can tell
    assert logged["projected_grad"] == pytest.approx(sum(1.0 if c > 0 else -1.0 for c in slopes) / q)
    for name, param in trainer.groups.backbone.items():
        torch.testing.assert_close(param.detach(), want[name], rtol=1e-6, atol=1e-7, msg=name)
    assert any(not torch.equal(param.detach(), theta[n]) for n, param in trainer.groups.backbone.items())


def test_training_lowers_the_loss_and_replays_from_its_seeds():
    trainer, encode = build("zo-sign", lr=2e-3)
    base = snapshot(trainer.groups.backbone)
    before = deployed_loss(trainer, encode)
    for step in range(20):
        trainer.step(step)
    assert deployed_loss(trainer, encode) < before
    replayed = {n: torch.nn.Parameter(t.clone()) for n, t in base.items()}
    trajectory = trainer.seed_trajectory()
    zo.replay(replayed, trajectory, rule_of(trajectory.rule))
    assert all(torch.equal(replayed[n], p) for n, p in trainer.groups.backbone.items())
