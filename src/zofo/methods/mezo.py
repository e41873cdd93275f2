"""MeZO (ZO-SGD on the whole backbone) and ZO-PEFT (the same on the PEFT parameters only).

    for each step t:
        seeds  <- step_seed(run_seed, t, i) for i < q
        c_i    <- (L(theta + eps u_i) - L(theta - eps u_i)) / (2 eps)      (u_i regenerated from seeds)
        theta  <- update(theta, c, u)                                       (ZO-SGD in place by default)

`update_every` k > 1 defers ZO-SGD's update: the (seeds, c) of k steps, all probed at the same theta, are
applied in one pass with one stochastic rounding, which cuts the rounding noise that bf16 weights add per
step by about sqrt(k) (at small learning rates it dominates the estimate's own noise; docs/ZO_ENGINE.md).
The default (0) is 16 for bf16/fp16 weights and 1 otherwise.

On a CUDA device each probe L(theta +- eps u) is a CUDA-graph replay over a fixed-shape batch
(`zo.GraphedProbes`, `static_batches`); `cuda_graphs=False` probes eagerly.
"""

from __future__ import annotations

import torch

from zofo import zo
from zofo.errors import ZofoError
from zofo.evaluation.static import StaticBatch, static_losses, to_static
from zofo.methods.base import Method, MethodOptions, batch_loss, make_schedule
from zofo.registry import METHODS
from zofo.zo.rounding import LOW_PRECISION

UPDATE_RULES = {"sgd": zo.ZOSGD, "momentum": zo.ZOMomentum, "adam": zo.ZOAdam}


def update_rule(name: str, momentum: float, weight_decay: float, probed: bool = True) -> zo.ZOUpdate:
    """ZO-SGD in place (default, no state), heavy-ball momentum, or Adam (two fp32 buffers per weight);
    ``probed``: bf16/fp16 weights move along the direction the probes realised (`zo.Probed`)."""
    if name not in UPDATE_RULES:
        raise ZofoError(f"unknown ZO update rule {name!r}", f"use one of: {', '.join(UPDATE_RULES)}")
    if name == "momentum":
        return zo.ZOMomentum(beta=momentum, weight_decay=weight_decay, probed=probed)
    return UPDATE_RULES[name](weight_decay=weight_decay, probed=probed)


class ZOTrainer:
    """The ZO half of a method: seeded SPSA estimates and an update rule over one set of parameters."""

    def __init__(self, model: torch.nn.Module, params: dict[str, torch.nn.Parameter], options: MethodOptions,
                 lr: float):
        self.model, self.params, self.options = model, params, options
        self.rule = update_rule(options.theta_update, options.momentum, options.weight_decay,
                                options.probed_direction)
        self.state = self.rule.init(params)
        self.lr = make_schedule(options.schedule, lr, options.steps, options.warmup_steps)
        dtype = next(iter(params.values())).dtype
        self.every = resolve_update_every(options.update_every, options.theta_update, dtype)
        self.pending: list[tuple[zo.AnyEstimate, float]] = []  # deferred (estimate, lr), oldest first
        self.on_device = self.rule.takes_device_estimates  # queue_at keeps estimates on the device
        self.trajectory = zo.Trajectory(list(params), options.direction, options.eps, options.two_sided,
                                        rule_settings(options))

    def seeds(self, step: int) -> list[int]:
        return [zo.step_seed(self.options.seed, step, i) for i in range(self.options.q)]

    def estimate(self, loss_fn, step: int) -> zo.ZOEstimate:
        with torch.no_grad():
            return zo.estimate(loss_fn, self.model, self.params, self.seeds(step), eps=self.options.eps,
                               two_sided=self.options.two_sided, direction=self.options.direction)

    def queue_at(self, loss_at, step: int) -> zo.AnyEstimate:
        """`estimate` through a prober loss_at(seed, scale) (a `zo.GraphedProbes`), queued: nothing is read back
        where the update allows it (a `zo.DeviceEstimate`), else the resolved `zo.ZOEstimate`."""
        queued = zo.queue_probes(loss_at, self.seeds(step), eps=self.options.eps,
                                 two_sided=self.options.two_sided, direction=self.options.direction)
        return queued if self.on_device else queued.resolve()

    def apply(self, estimate: zo.AnyEstimate, step: int) -> dict:
        """Apply the update, or defer it (`update_every`), or skip it when a probe's loss was not finite;
        returns what to log (device scalars for a `DeviceEstimate`: reading them is the caller's sync)."""
        if isinstance(estimate, zo.ZOEstimate) and estimate.skipped:
            return {"skipped": 1}
        if self.every == 1:
            self.update(estimate, self.lr(step))
        else:
            self.pending.append((estimate, self.lr(step)))
            if len(self.pending) == self.every:
                self.flush()
        logged = {"lr": self.lr(step), "seed": estimate.seeds[0]}
        if isinstance(estimate, zo.DeviceEstimate):
            return {"projected_grad": estimate.projected_grads.mean(), "skipped": (~estimate.finite).int(), **logged}
        grads = estimate.projected_grads
        return {"projected_grad": sum(grads) / len(grads), **logged}

    def flush(self) -> None:
        """Apply the deferred updates in one pass (one stochastic rounding for all of them)."""
        if self.pending:
            chained, lr = zo.chain([e for e, _ in self.pending], [lr for _, lr in self.pending])
            self.update(chained, lr)
            self.pending = []

    def update(self, estimate: zo.AnyEstimate, lr: float) -> None:
        """theta <- rule(theta, estimate, lr), and the update joins the seed trajectory."""
        self.state = self.rule.apply(self.params, estimate, lr, self.state)
        self.trajectory.record(estimate, lr)

    def state_dict(self) -> dict:
        """The rule's state, the deferred updates and the trajectory, both as trajectory records: a resumed run
        chains the pending c_i the uninterrupted run would have chained."""
        pending = [zo.as_record(e, lr) for e, lr in self.pending]
        return {**self.state.state_dict(), "pending": pending, "trajectory": self.trajectory.records()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        pending = state.pop("pending", [])
        o = self.options
        self.pending = [zo.from_record(p, o.direction, o.eps, o.two_sided) for p in pending]
        if "trajectory" in state:
            self.trajectory.updates = list(state.pop("trajectory"))
        else:  # a checkpoint from before trajectories: what follows does not start at the base weights
            self.trajectory.updates, self.trajectory.complete = [], False
        self.state.load_state_dict(state)


def rule_settings(options: MethodOptions) -> dict:
    """The update rule's settings as `update_rule` takes them (kept in the seed trajectory)."""
    return {"name": options.theta_update, "momentum": options.momentum, "weight_decay": options.weight_decay,
            "probed": options.probed_direction}


def rule_of(settings: dict) -> zo.ZOUpdate:
    """The update rule that `rule_settings` describes."""
    return update_rule(settings["name"], settings["momentum"], settings["weight_decay"], settings["probed"])


#: `update_every` chosen for bf16/fp16 weights: closes MeZO's bf16-vs-fp32 gap on SmolLM2 / SST-2 to 1 point
#: (benchmarks/results/gpu-2026-11-29/mezo_bf16_fix-run8-10; 64 trains as well, 1 loses 2-3 points)
LOW_PRECISION_UPDATE_EVERY = 16


def resolve_update_every(every: int, theta_update: str, dtype: torch.dtype) -> int:
    """`update_every` validated (> 1 only with ZO-SGD, which is stateless); 0 picks it from the weights' dtype."""
    if not isinstance(every, int) or every < 0:
        raise ZofoError(f"optim.update_every must be an integer >= 0, got {every!r}",
                        "use 0 (auto), 1 (no deferral) or e.g. 16")
    if every == 0:
        return LOW_PRECISION_UPDATE_EVERY if dtype in LOW_PRECISION and theta_update == "sgd" else 1
    if every > 1 and theta_update != "sgd":
        raise ZofoError(f"optim.update_every={every} needs optim.theta_update=sgd (got {theta_update!r})",
                        "set optim.update_every=1 or optim.theta_update=sgd")
    return every


def mean_loss(estimate: zo.AnyEstimate):
    """Mean objective over the probes: a float, or a device scalar for a `DeviceEstimate`."""
    if isinstance(estimate, zo.DeviceEstimate):
        return estimate.losses.mean()
    return sum(estimate.losses) / max(1, len(estimate.losses))


class ZerothOrder(Method):
    """Forward-only training of `params` with a seeded SPSA estimate per step."""

    def setup(self, params: dict[str, torch.nn.Parameter], lr: float) -> None:
        self.zo = ZOTrainer(self.model, params, self.options, lr)
        on_cuda = next(iter(params.values())).is_cuda
        self.probes = self.graphed_probes(params) if self.options.cuda_graphs and on_cuda else None

    def graphed_probes(self, params: dict[str, torch.nn.Parameter], capture: bool = True) -> zo.GraphedProbes:
        """The training loss over fixed-shape batches, probed through CUDA graphs (eagerly if not capture)."""

        def loss(inputs) -> torch.Tensor:
            return static_losses(self.model, StaticBatch(**inputs), self.objective).mean()

        return zo.GraphedProbes(self.model, params, loss, self.options.direction, capture=capture)

    def step(self, step: int) -> dict:
        batch = self.batches.next("train")
        if self.probes is None:
            estimate = self.zo.estimate(lambda: batch_loss(self.model, batch, self.objective), step)
            replayed = 0
        else:  # queued: on CUDA with ZO-SGD nothing is read back, so the host never waits for the device
            static = to_static(batch)
            inputs = static.tensors()
            estimate = self.zo.queue_at(lambda seed, scale: self.probes(inputs, seed, scale), step)
            replayed = static.input_ids.shape[0] * len(estimate.losses) if self.probes.capture else 0
        logged = self.zo.apply(estimate, step)
        return {"loss": mean_loss(estimate), "replayed_rows": replayed, **logged}

    def flush(self) -> None:
        self.zo.flush()

    def seed_trajectory(self) -> zo.Trajectory | None:
        return self.zo.trajectory if self.trains_backbone else None

    def state_dict(self) -> dict:
        return {"zo": self.zo.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.zo.load_state_dict(state["zo"])


@METHODS.register("mezo")
class MeZO(ZerothOrder):
    """ZO-SGD on every backbone weight (Malladi et al., 2023)."""

    trains_backbone = True

    def __init__(self, model, groups, batches, options):
        super().__init__(model, groups, batches, options)
        self.setup(groups.backbone, options.lr)


@METHODS.register("zo-peft")
class ZOPeft(ZerothOrder):
    """ZO-SGD on the PEFT parameters only; the backbone stays frozen."""

    adapter_names = ("default",)
    deploy_adapter = "default"

    def __init__(self, model, groups, batches, options):
        super().__init__(model, groups, batches, options)
        self.setup(groups.adapter("default"), options.lr)
