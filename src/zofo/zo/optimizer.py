"""The ZO optimizer of one set of parameters: seeded SPSA estimates, an update rule, deferred updates, the seed
trajectory. MeZO, ZO-PEFT and Bilevel ZOFO's backbone are each one `ZOOptimizer`.

    seeds  <- step_seed(run_seed, t, i) for i < q
    c_i    <- (L(theta + eps u_i) - L(theta - eps u_i)) / (2 eps)      (u_i regenerated from the seeds)
    theta  <- rule(theta, c, u, lr(t))                                  (deferred: k steps in one pass)

`update_every` k > 1 defers ZO-SGD's update: the (seeds, c) of k steps, all probed at the same theta, are
applied in one pass with one stochastic rounding, which cuts the rounding noise that bf16 weights add per
step by about sqrt(k) (at small learning rates it dominates the estimate's own noise; docs/ZO_ENGINE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from zofo.errors import ZofoError
from zofo.ranks import Ranks

from .directions import step_seed
from .estimators import AnyEstimate, DeviceEstimate, ZOEstimate, chain, queue_probes
from .graphs import GraphedProbes
from .options import RULES, ZOOptions
from .perturb import perturbed_loss
from .rounding import LOW_PRECISION
from .schedules import Schedule
from .trajectory import Trajectory, as_record, from_record
from .updates import ZOSGD, ZOAdam, ZOMomentum, ZOUpdate

UPDATE_RULES: dict[str, type] = dict(zip(RULES, (ZOSGD, ZOMomentum, ZOAdam), strict=True))

#: `update_every` chosen for bf16/fp16 weights: closes MeZO's bf16-vs-fp32 gap on SmolLM2 / SST-2 to 1 point
#: (docs/RESULTS.md, "Deferred updates"; 64 trains as well, 1 loses 2-3 points)
LOW_PRECISION_UPDATE_EVERY = 16


def update_rule(name: str, momentum: float, weight_decay: float, probed: bool = True) -> ZOUpdate:
    """ZO-SGD in place (default, no state), heavy-ball momentum, or Adam (two fp32 buffers per weight);
    ``probed``: bf16/fp16 weights move along the direction the probes realised (`zo.Probed`)."""
    if name not in UPDATE_RULES:
        raise ZofoError(f"unknown ZO update rule {name!r}", f"use one of: {', '.join(UPDATE_RULES)}")
    if name == "momentum":
        return ZOMomentum(beta=momentum, weight_decay=weight_decay, probed=probed)
    return UPDATE_RULES[name](weight_decay=weight_decay, probed=probed)


def rule_settings(options: ZOOptions, weight_decay: float) -> dict[str, Any]:
    """The update rule's settings as `update_rule` takes them (kept in the seed trajectory)."""
    return {"name": options.rule, "momentum": options.momentum, "weight_decay": weight_decay,
            "probed": options.probed_direction}


def rule_of(settings: Mapping[str, Any]) -> ZOUpdate:
    """The update rule that `rule_settings` describes."""
    return update_rule(settings["name"], settings["momentum"], settings["weight_decay"], settings["probed"])


def resolve_update_every(every: int, rule: str, dtype: torch.dtype) -> int:
    """`update_every` as applied: 0 picks it from the weights' dtype (16 for bf16/fp16 with ZO-SGD, else 1)."""
    if every == 0:
        return LOW_PRECISION_UPDATE_EVERY if dtype in LOW_PRECISION and rule == "sgd" else 1
    return every


def mean_loss(est: AnyEstimate) -> float | Tensor:
    """Mean objective over the probes: a float, or a device scalar for a `DeviceEstimate`."""
    if isinstance(est, DeviceEstimate):
        return est.losses.mean()
    return sum(est.losses) / max(1, len(est.losses))


class ZOOptimizer:
    """Seeded SPSA estimates of a loss over ``params`` and the update they make: ``options`` says how to probe
    and which rule, ``lr`` is the schedule step -> learning rate, ``seed`` the run's seed (step seeds derive
    from it). Under data parallelism (``ranks``) each rank probes its share of the batch and the probes' losses
    are averaged over the ranks before the c_i are formed: every rank then applies the same update."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], options: ZOOptions, lr: Schedule,
                 seed: int, weight_decay: float = 0.0, ranks: Ranks | None = None):
        options.check()
        self.model, self.params, self.options, self.lr, self.seed = model, params, options, lr, seed
        self.ranks = ranks or Ranks()
        self.rule = update_rule(options.rule, options.momentum, weight_decay, options.probed_direction)
        self.state = self.rule.init(params)
        self.every = resolve_update_every(options.update_every, options.rule, next(iter(params.values())).dtype)
        self.pending: list[tuple[AnyEstimate, float]] = []  # deferred (estimate, lr), oldest first
        self.on_device = self.rule.takes_device_estimates  # queue_at keeps estimates on the device
        self.trajectory = Trajectory(list(params), options.direction, options.eps, options.two_sided,
                                     rule_settings(options, weight_decay))

    def seeds(self, step: int) -> list[int]:
        return [step_seed(self.seed, step, i) for i in range(self.options.q)]

    def estimate(self, loss_fn: Callable[[], Tensor], step: int) -> ZOEstimate:
        """`zo.estimate` of ``loss_fn`` at this step's seeds (its losses averaged over the ranks)."""
        o = self.options

        def loss_at(seed: int, scale: float) -> Tensor:
            return perturbed_loss(loss_fn, self.model, self.params, seed, scale, o.direction)

        with torch.no_grad():
            return self.queued(loss_at, step).resolve()

    def queue_at(self, loss_at: Callable[[int, float], Tensor], step: int) -> AnyEstimate:
        """`estimate` through a prober loss_at(seed, scale) (a `GraphedProbes`), queued: nothing is read back
        where the update allows it (a `DeviceEstimate`), else the resolved `ZOEstimate`."""
        queued = self.queued(loss_at, step)
        return queued if self.on_device else queued.resolve()

    def queued(self, loss_at: Callable[[int, float], Tensor], step: int) -> DeviceEstimate:
        """The probes of this step queued on the device, their losses averaged over the ranks (an all-reduce of
        2q floats, queued behind them)."""
        o = self.options
        queued = queue_probes(loss_at, self.seeds(step), eps=o.eps, two_sided=o.two_sided, direction=o.direction)
        return replace(queued, values=self.ranks.mean_(queued.values)) if self.ranks.parallel else queued

    def estimate_of(self, loss_fn: Callable[[Any], Tensor], inputs: Any, step: int,
                    probes: GraphedProbes | None = None) -> AnyEstimate:
        """The estimate of ``loss_fn(inputs)``: through ``probes`` (CUDA graphs of the same ``loss_fn``) where
        given, else eagerly."""
        if probes is None:
            return self.estimate(lambda: loss_fn(inputs), step)
        return self.queue_at(lambda seed, scale: probes(inputs, seed, scale), step)

    def apply(self, est: AnyEstimate, step: int) -> dict:
        """Apply the update, or defer it (`update_every`), or skip it when a probe's loss was not finite;
        returns what to log (device scalars for a `DeviceEstimate`: reading them is the caller's sync)."""
        if isinstance(est, ZOEstimate) and est.skipped:
            return {"skipped": 1}
        if self.every == 1:
            self.update(est, self.lr(step))
        else:
            self.pending.append((est, self.lr(step)))
            if len(self.pending) == self.every:
                self.flush()
        logged = {"lr": self.lr(step), "seed": est.seeds[0]}
        if isinstance(est, DeviceEstimate):
            return {"projected_grad": est.projected_grads.mean(), "skipped": (~est.finite).int(), **logged}
        grads = est.projected_grads
        return {"projected_grad": sum(grads) / len(grads), **logged}

    def flush(self) -> None:
        """Apply the deferred updates in one pass (one stochastic rounding for all of them)."""
        if self.pending:
            chained, lr = chain([e for e, _ in self.pending], [lr for _, lr in self.pending])
            self.update(chained, lr)
            self.pending = []

    def update(self, est: AnyEstimate, lr: float) -> None:
        """theta <- rule(theta, estimate, lr), and the update joins the seed trajectory."""
        self.state = self.rule.apply(self.params, est, lr, self.state)
        self.trajectory.record(est, lr)

    def state_dict(self) -> dict:
        """The rule's state, the deferred updates and the trajectory, both as trajectory records: a resumed run
        chains the pending c_i the uninterrupted run would have chained."""
        pending = [as_record(e, lr) for e, lr in self.pending]
        return {**self.state.state_dict(), "pending": pending, "trajectory": self.trajectory.records()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        pending = state.pop("pending", [])
        o = self.options
        self.pending = [from_record(p, o.direction, o.eps, o.two_sided) for p in pending]
        if "trajectory" in state:
            self.trajectory.updates = list(state.pop("trajectory"))
        else:  # a checkpoint from before trajectories: what follows does not start at the base weights
            self.trajectory.updates, self.trajectory.complete = [], False
        self.state.load_state_dict(state)
