"""MeZO (ZO-SGD on the whole backbone) and ZO-PEFT (the same on the PEFT parameters only).

    for each step t:
        seeds  <- step_seed(run_seed, t, i) for i < q
        c_i    <- (L(theta + eps u_i) - L(theta - eps u_i)) / (2 eps)      (u_i regenerated from seeds)
        theta  <- update(theta, c, u)                                       (ZO-SGD in place by default)

The ZO optimizer (probing, the update rule, deferred updates, the seed trajectory) is `zo.ZOOptimizer`, set by the
run's `zo:` section; a variant that changes the update replaces the class attribute ``Optimizer``.

On a CUDA device each probe L(theta +- eps u) is a CUDA-graph replay over a fixed-shape batch
(`zo.GraphedProbes`, `static_batches`); `cuda_graphs=False` probes eagerly.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from zofo.evaluation.static import to_static
from zofo.methods.base import Method, batch_loss
from zofo.registry import METHODS
from zofo.zo.graphs import GraphedProbes
from zofo.zo.optimizer import ZOOptimizer, mean_loss
from zofo.zo.trajectory import Trajectory


class ZerothOrder(Method):
    """Forward-only training of the backbone (``trains_backbone``) or of the PEFT module, at `optim.lr`, with a
    seeded SPSA estimate per step."""

    #: the ZO optimizer class: takes (model, params, zo options, lr schedule, seed, weight decay)
    Optimizer: ClassVar[type[ZOOptimizer]] = ZOOptimizer
    takes_pieces = True

    def __init__(self, model, groups, batches, settings, options=None):
        super().__init__(model, groups, batches, settings, options)
        params = self.trained_group()
        s = settings
        self.zo = self.Optimizer(model, params, s.zo, s.schedule(s.optim.lr), s.seed, s.optim.weight_decay,
                                 ranks=s.ranks)
        on_cuda = next(iter(params.values())).is_cuda
        self.probes = self.graphed_probes(params) if s.graphed and on_cuda else None

    def loss(self, batch) -> torch.Tensor:
        """The training loss of an encoded batch (in pieces of at most `max_rows` rows) or of its fixed-shape
        tensors (what the probes replay)."""
        return batch_loss(self.model, batch, self.objective, self.settings.max_rows)

    def graphed_probes(self, params: dict[str, torch.nn.Parameter], capture: bool = True) -> GraphedProbes:
        """The training loss over fixed-shape batches, probed through CUDA graphs (eagerly if not capture)."""
        return GraphedProbes(self.model, params, self.loss, self.settings.zo.direction, capture=capture)

    def step(self, step: int) -> dict:
        batch = self.batches.next("train")
        # on CUDA with ZO-SGD the probes are queued and nothing is read back: the host never waits for the device
        inputs = batch if self.probes is None else to_static(batch).tensors()
        estimate = self.zo.estimate_of(self.loss, inputs, step, self.probes)
        return {"loss": mean_loss(estimate), **self.zo.apply(estimate, step)}

    def flush(self) -> None:
        self.zo.flush()

    def seed_trajectory(self) -> Trajectory | None:
        return self.zo.trajectory if self.trains_backbone else None

    def state_dict(self) -> dict:
        return {"zo": self.zo.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.zo.load_state_dict(state["zo"])


@METHODS.register("mezo")
class MeZO(ZerothOrder):
    """ZO-SGD on every backbone weight (Malladi et al., 2023)."""

    trains_backbone = True
    shards_backbone = True


@METHODS.register("zo-peft")
class ZOPeft(ZerothOrder):
    """ZO-SGD on the PEFT parameters only; the backbone stays frozen."""

    adapter_names = ("default",)
    deploy_adapter = "default"
    shards_backbone = True
