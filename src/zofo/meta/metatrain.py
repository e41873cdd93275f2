"""Meta-training with Bilevel ZOFO over a task pool (Algorithm 2 on many tasks) and its first-order twin.

    min_{theta, p_1..p_N} max_{z_1..z_N}   sum_{i in S_t} F_i(theta, p_i, z_i)
    F_i = [ f_i(theta, p_i) + lam * ( g_i(theta, p_i) - g_i(theta, z_i) ) ] / (1 + lam)   (normalize; else no divisor)

    symbols   theta     shared backbone (every weight of the pretrained model)      -- ZO (Alg. 2) / FO Adam (Alg. 1)
              p_i       task i's upper PEFT copy (adapter "p" while i is swapped in) -- FO, Adam, its own state
              z_i       task i's lower PEFT copy (adapter "z")                       -- FO, Adam, its own state
              f_i, g_i  losses on task i's upper data D_f^i (256) and lower data D_g^i (512)
              S_t       the T tasks of outer step t: drawn without replacement, seeded by (seed, t)
              lam, K    penalty weight, lower steps per outer step;  eps  ZO perturbation scale

    one outer iteration t:
    0  S_t <- T of the N tasks, random.Random((seed, t))
    1  for i in S_t:  swap block i in;  K times  z_i <- Adam(z_i, grad_z g_i(theta, z_i; B_g));  swap out
    2  for i in S_t:  draw B_f^i ~ D_f^i, B_g^i ~ D_g^i
    3  d_th <- SPSA estimate of grad_theta sum_i F_i(theta, p_i, z_i; B^i) with ONE probe pair for all T tasks:
              at theta + eps u and at theta - eps u each task's (p_i, z_i) values are loaded in turn and its F_i
              evaluated, so c = sum_i (F_i(+) - F_i(-)) / (2 eps) = sum_i c_i     (Alg. 1: backprop, task by task)
    4  for i in S_t:  swap in;  p_i <- Adam(p_i, grad_p [f_i(theta, p_i; B_f^i) + lam g_i(theta, p_i; B_g^i)]);  out
    5  theta <- theta - lr_theta * c u(seed)      (ZO-SGD in place, recorded in the seed trajectory; Alg. 1: Adam)

Line 3 comes before line 4 as in the single-task method (`zofo.methods.bilevel`): every estimate of step t is
taken at (theta_t, p_i^t, z_i^{t+1}). Each task's F_i is one term of the probe's loss vector (`zo.ZOEstimate.terms`),
so every sampled task counts in the update (the authors' code kept only the last task's estimate) and the
per-task contributions can be read back. Swapping a block touches adapter parameters only, never theta, and the
blocks of tasks not swapped in stay in host memory (`zofo.meta.blocks.TaskBlocks`).

Under torchrun (``ranks``, `zofo.ranks`) every rank samples the same S_t and takes its share of each task's batch
(B / world examples, `Ranks.share`, as `zofo train` does); the gradients of z_i and p_i are averaged over the ranks
(one flat all-reduce per FO step), the probes' [2q, T] losses too before c is formed (Alg. 1: the backbone's
gradient), so every rank applies the identical updates and holds identical blocks and theta.

Not here (the single-task method has them): CUDA graphs, the mixed-adapter batch, deferred or non-SGD ZO updates
and learning-rate schedules. Each task's three terms take three forwards (p on B_f, p on B_g, z on B_g).
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zofo import zo
from zofo.config import OptimConfig
from zofo.errors import ZofoError
from zofo.meta.blocks import TaskBlocks
from zofo.meta.split import TaskData
from zofo.methods import Method
from zofo.methods.base import Settings, batch_backward, batch_loss
from zofo.models.adapters import ParamGroups, activate
from zofo.ranks import Ranks
from zofo.tasks.streams import ExampleStream
from zofo.zo.options import ZOOptions

#: the backbone's update rule, as the seed trajectory names it (what `zofo replay` and resume rebuild it with)
THETA_RULE = {"name": "sgd", "momentum": 0.9, "weight_decay": 0.0, "probed": True}


@dataclass(frozen=True)
class MetaOptions:
    """Plain values the meta-training method reads (built from `MetaTrainConfig` at the boundary)."""

    tasks_per_step: int = 4      # T
    lower_steps: int = 10        # K
    lam: float = 1e4
    normalize: bool = True       # F_i / (1 + lam), so MeZO's learning rates carry over
    lr: float = 1e-6             # theta (constant)
    lr_upper: float = 1e-4       # p_i
    lr_lower: float = 1e-4       # z_i
    zo: ZOOptions = ZOOptions()  # eps, q (probe pairs per outer step), direction; two-sided ZO-SGD on theta
    seed: int = 0
    steps: int = 1000
    objective: str = "ce"
    first_order: bool = False    # Algorithm 1: backprop gradient and Adam for theta
    max_rows: int | None = None  # rows a forward takes at most: batches cut into pieces of whole examples


def settings_of(options: MetaOptions, ranks: Ranks | None = None) -> Settings:
    """The values every method reads (`Method.settings`), from the meta-training options, and the ranks."""
    return Settings(objective=options.objective, steps=options.steps, seed=options.seed, cuda_graphs=False,
                    optim=OptimConfig(lr=options.lr, lr_upper=options.lr_upper, lr_lower=options.lr_lower),
                    zo=options.zo,
                    ranks=ranks or Ranks())


def sample_tasks(n_tasks: int, per_step: int, seed: int, step: int) -> list[int]:
    """Line 0: the indices of step `step`'s tasks, a pure function of (seed, step), so a resumed run draws the
    same ones without any sampler state."""
    return random.Random(f"{seed}:tasks:{step}").sample(range(n_tasks), per_step)


class TaskStreams:
    """Per task, seeded resumable streams over its upper and lower data (what the loop checkpoints as `batches`).
    ``share`` (data parallelism): what this process takes of each batch that every process draws alike."""

    def __init__(self, data: list[TaskData], batch_size: int, seed: int, encode: Callable,
                 share: Callable[[list], list] | None = None):
        self.names = [d.name for d in data]
        self.encode, self.share = encode, share
        self.streams = {d.name: {level: ExampleStream(getattr(d, level), batch_size,
                                                      seed=zlib.crc32(f"{seed}:{d.name}:{level}".encode()))
                                 for level in ("upper", "lower")} for d in data}

    def examples(self, task: str, level: str) -> list:
        batch = self.streams[task][level].next()
        return self.share(batch) if self.share is not None else batch

    def state_dict(self) -> dict:
        return {task: {level: stream.state_dict() for level, stream in by_level.items()}
                for task, by_level in self.streams.items()}

    def load_state_dict(self, state: dict) -> None:
        for task, by_level in state.items():
            for level, stream_state in by_level.items():
                self.streams[task][level].load_state_dict(stream_state)


@dataclass
class TaskBatch:
    """Line 2 for one task: B_f and B_g, encoded."""

    f: object
    g: object


class MetaBilevel(Method):
    """Bilevel ZOFO over a task pool: per-task FO blocks (z_i, p_i), one ZO estimate of the summed F per step."""

    adapter_names = ("z", "p")
    trains_backbone = True

    def __init__(self, model: nn.Module, groups: ParamGroups, streams: TaskStreams, options: MetaOptions,
                 ranks: Ranks | None = None):
        super().__init__(model, groups, streams, settings_of(options, ranks), options)
        self.ranks = self.settings.ranks
        if not 1 <= options.tasks_per_step <= len(streams.names):
            raise ZofoError(f"tasks per step T={options.tasks_per_step} with {len(streams.names)} meta-train tasks",
                            "choose 1 <= T <= the number of meta-train tasks")
        self.lam, self.K, self.T = options.lam, options.lower_steps, options.tasks_per_step
        self.scale = 1.0 / (1.0 + self.lam) if options.normalize else 1.0
        self.opt_z = torch.optim.Adam(list(groups.adapter("z").values()), lr=options.lr_lower)
        self.opt_p = torch.optim.Adam(list(groups.adapter("p").values()), lr=options.lr_upper)
        self.blocks = TaskBlocks(streams.names, groups.adapter("z") | groups.adapter("p"), [self.opt_z, self.opt_p])
        self.theta = groups.backbone
        if options.first_order:
            self.opt_theta = torch.optim.Adam(list(self.theta.values()), lr=options.lr)
            self.trajectory = None
        else:
            self.rule = zo.ZOSGD(weight_decay=THETA_RULE["weight_decay"], probed=THETA_RULE["probed"])
            self.rule_state = self.rule.init(self.theta)
            self.trajectory = zo.Trajectory(list(self.theta), options.zo.direction, options.zo.eps, True,
                                            dict(THETA_RULE))

    def step(self, step: int) -> dict:
        """One outer iteration (lines 0-5 of the module docstring)."""
        tasks = [self.batches.names[i] for i in sample_tasks(len(self.batches.names), self.T,
                                                             self.options.seed, step)]     # line 0
        g_z = [self.lower_steps(task) for task in tasks]                                   # line 1
        drawn = {task: self.task_batch(task) for task in tasks}                            # line 2
        estimate = self.theta_estimate(tasks, drawn, step)                                 # line 3
        upper = [self.p_step(task, drawn[task]) for task in tasks]                         # line 4
        logged = self.theta_apply(estimate, step)                                          # line 5
        return {"loss": sum(f for f, _ in upper) / len(upper), "g_p": sum(g for _, g in upper) / len(upper),
                "g_z": sum(g_z) / len(g_z), "tasks": ",".join(tasks), **logged}

    @contextlib.contextmanager
    def swapped(self, task: str) -> Iterator[None]:
        """Task's block (values and Adam states) on the model for the duration of the block."""
        self.blocks.swap_in(task)
        try:
            yield
        finally:
            self.blocks.swap_out(task)

    def loss(self, copy: str, batch) -> Tensor:
        """Mean training loss of an encoded batch through adapter `copy` (f or g, by the data it is given), summed
        over its pieces of at most `max_rows` rows (under no_grad, as in a probe, only a piece is held at once)."""
        activate(self.model, self.groups, copy)
        return batch_loss(self.model, batch, self.objective, self.options.max_rows)

    def descend(self, copy: str, batch, weight: float | None = None) -> float:
        """Backward of [weight x] the batch's mean loss through adapter `copy`, a piece at a time (the gradients
        accumulate, and each piece's graph is freed before the next); returns the mean loss."""
        activate(self.model, self.groups, copy)
        return batch_backward(self.model, batch, self.objective, self.options.max_rows, weight).item()

    def lower_steps(self, task: str) -> float:
        """Line 1 for one task: K Adam steps on z_i, each on a fresh B_g; returns the last g_i(theta, z_i)."""
        with self.swapped(task):
            for _ in range(self.K):
                g = self.descend("z", self.batches.encode(self.batches.examples(task, "lower")))
                self.ranks.average_grads_(list(self.groups.adapter("z").values()))
                self.opt_z.step()
                self.opt_z.zero_grad(set_to_none=True)
        return g

    def task_batch(self, task: str) -> TaskBatch:
        encode, draw = self.batches.encode, self.batches.examples
        return TaskBatch(encode(draw(task, "upper")), encode(draw(task, "lower")))

    def penalty(self, batch: TaskBatch) -> Tensor:
        """F_i for the task whose values the adapters hold: scale * (f(p) + lam * (g(p) - g(z)))."""
        f, g_p, g_z = self.loss("p", batch.f), self.loss("p", batch.g), self.loss("z", batch.g)
        return self.scale * (f + self.lam * (g_p - g_z))

    def objective_terms(self, tasks: list[str], drawn: dict[str, TaskBatch]) -> Tensor:
        """[T]: each sampled task's F_i at the current theta (inside a probe: the perturbed one)."""
        terms = []
        for task in tasks:
            self.blocks.load_values(task)  # adapter parameters only: theta and its perturbation are untouched
            terms.append(self.penalty(drawn[task]))
        return torch.stack(terms)

    def theta_estimate(self, tasks: list[str], drawn: dict[str, TaskBatch], step: int):
        """Line 3: one seeded SPSA estimate of grad_theta sum_i F_i (Alg. 1: the backprop gradient)."""
        if self.options.first_order:
            return self.theta_gradient(tasks, drawn)
        o = self.options
        seeds = [zo.step_seed(o.seed, step, i) for i in range(o.zo.q)]

        def loss_at(seed: int, scale: float) -> Tensor:
            return zo.perturbed_loss(lambda: self.objective_terms(tasks, drawn), self.model, self.theta, seed,
                                     scale, o.zo.direction)

        queued = zo.queue_probes(loss_at, seeds, eps=o.zo.eps, two_sided=True, direction=o.zo.direction)
        self.ranks.mean_(queued.values)  # [2q, T] float64: each F_i over the whole batch, before c is formed
        return queued.resolve()

    def theta_gradient(self, tasks: list[str], drawn: dict[str, TaskBatch]) -> tuple[float, list[Tensor]]:
        """(sum_i F_i, grad_theta sum_i F_i) by backprop, one task's graph at a time (values swap in place)."""
        params = list(self.theta.values())
        total, grads = 0.0, [torch.zeros_like(p) for p in params]
        for param in params:
            param.requires_grad_(True)
        try:
            for task in tasks:
                self.blocks.load_values(task)
                value = self.penalty(drawn[task])
                for acc, grad in zip(grads, torch.autograd.grad(value, params), strict=True):
                    acc.add_(grad)
                total += value.item()
        finally:
            for param in params:
                param.requires_grad_(False)
        return self.averaged(total, grads)

    def averaged(self, total: float, grads: list[Tensor]) -> tuple[float, list[Tensor]]:
        """(sum_i F_i, its gradients) averaged over the ranks' shares of the batch: one flat all-reduce."""
        if not self.ranks.parallel:
            return total, grads
        value, grads = self.ranks.mean_with(torch.tensor(total, dtype=grads[0].dtype, device=grads[0].device), grads)
        return value.item(), grads

    def p_step(self, task: str, batch: TaskBatch) -> tuple[float, float]:
        """Line 4 for one task: p_i <- Adam(p_i, grad_p [f_i + lam g_i(p_i)]); two backward passes of one batch
        each (the peak of an FO-PEFT step); returns (f_i, g_i(p_i))."""
        with self.swapped(task):
            f = self.descend("p", batch.f)
            g_p = self.descend("p", batch.g, weight=self.lam)
            self.ranks.average_grads_(list(self.groups.adapter("p").values()))
            self.opt_p.step()
            self.opt_p.zero_grad(set_to_none=True)
        return f, g_p

    def theta_apply(self, estimate, step: int) -> dict:
        """Line 5: theta <- theta - lr c u (ZO-SGD in place, then recorded), or Adam on the backprop gradient."""
        lr = self.options.lr
        if self.options.first_order:
            value, grads = estimate
            for param, grad in zip(self.theta.values(), grads, strict=True):
                param.grad = grad
            self.opt_theta.step()
            self.opt_theta.zero_grad(set_to_none=True)
            return {"penalty": value, "lr": lr}
        if estimate.skipped:
            return {"penalty": estimate.loss, "skipped": 1}
        self.rule_state = self.rule.apply(self.theta, estimate, lr, self.rule_state)
        self.trajectory.record(estimate, lr)
        return {"penalty": estimate.loss, "projected_grad": sum(estimate.projected_grads) / estimate.q, "lr": lr,
                "seed": estimate.seeds[0]}

    @contextlib.contextmanager
    def deployed(self) -> Iterator[nn.Module]:
        """The meta-trained backbone alone (every adapter disabled): what meta-test adapts from."""
        with self.model.disable_adapter():
            self.model.eval()
            yield self.model

    def seed_trajectory(self) -> zo.Trajectory | None:
        return self.trajectory

    def state_dict(self) -> dict:
        """Every task's block and Adam states, and theta's state (its seed trajectory, or Adam's)."""
        if self.options.first_order:
            theta = self.opt_theta.state_dict()
        else:
            theta = {"rule": self.rule_state.state_dict(), "trajectory": self.trajectory.records()}
        return {"blocks": self.blocks.state_dict(), "theta": theta}

    def load_state_dict(self, state: dict) -> None:
        self.blocks.load_state_dict(state["blocks"])
        if self.options.first_order:
            self.opt_theta.load_state_dict(state["theta"])
            return
        self.rule_state.load_state_dict(state["theta"]["rule"])
        self.trajectory.updates = list(state["theta"]["trajectory"])
