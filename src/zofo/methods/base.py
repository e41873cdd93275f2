"""What every training method is to the loop: `step()`, the deployed model, and its state.

The loop never asks which method it runs; a method differs from the others only in its `step()`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from zofo.errors import ZofoError
from zofo.evaluation.objectives import example_losses
from zofo.evaluation.scoring import candidate_scores
from zofo.models.adapters import ParamGroups, activate
from zofo.tasks.streams import Batches
from zofo.zo.schedules import Schedule, constant, cosine, linear
from zofo.zo.trajectory import Trajectory


@dataclass(frozen=True)
class MethodOptions:
    """Plain values every method may read (built from the config at the boundary)."""

    objective: str = "ce"
    steps: int = 1000
    seed: int = 0
    lr: float = 1e-6             # backbone theta
    lr_upper: float = 1e-4       # upper PEFT copy p; the PEFT module of single-level methods
    lr_lower: float = 1e-4       # lower PEFT copy z
    schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    theta_update: str = "sgd"    # ZO update rule: sgd | momentum | adam
    momentum: float = 0.9
    eps: float = 1e-3
    q: int = 1
    two_sided: bool = True
    direction: str = "gaussian"
    probed_direction: bool = True  # bf16/fp16 theta: update along R(theta +- eps u), not u (zo.Probed)
    update_every: int = 0          # ZO-SGD: theta's updates applied every k steps (0: 16 for bf16/fp16, else 1)
    lam: float = 1e4
    lower_steps: int = 10
    normalize: bool = True
    deploy: str = "p"            # bilevel: the PEFT copy deployed with theta
    shots: int = 0
    cuda_graphs: bool = True     # on CUDA: replay ZO probes and FO steps as CUDA graphs


class Method(ABC):
    """A training algorithm over `model` whose parameters are split into `groups`."""

    #: whether the method trains at all (zero-shot and ICL do not)
    trains: bool = True
    #: adapter evaluated as the deployed model (None: the plain model)
    deploy_adapter: str | None = None
    #: named adapters the method needs on the model (empty: none)
    adapter_names: tuple[str, ...] = ()
    #: example streams the method draws from: "train", or "upper" and "lower" (the 1:2 split)
    stream_names: tuple[str, ...] = ("train",)
    #: whether the backbone's own weights change
    trains_backbone: bool = False

    def __init__(self, model: nn.Module, groups: ParamGroups, batches: Batches, options: MethodOptions):
        self.model = model
        self.groups = groups
        self.batches = batches
        self.options = options
        self.objective = options.objective
        model.eval()  # every method trains in eval mode: no dropout, so ZO probes and resumes are exact

    @abstractmethod
    def step(self, step: int) -> dict[str, float]:
        """One training step; returns the numbers to log (at least `loss`)."""

    def trainable(self) -> dict[str, nn.Parameter]:
        """Every parameter this method changes (what best-on-dev checkpoints keep)."""
        params = dict(self.groups.backbone) if self.trains_backbone else {}
        for adapter in self.groups.adapters.values():
            params.update(adapter)
        return params

    def flush(self) -> None:
        """Apply any update still pending (deferred ZO updates); no-op for most methods."""
        return None

    def seed_trajectory(self) -> Trajectory | None:
        """The ZO updates applied to the backbone so far (`zofo.zo.Trajectory`), for methods that make them."""
        return None

    @contextlib.contextmanager
    def deployed(self) -> Iterator[nn.Module]:
        """The model as it would be deployed (pending updates applied), in eval mode."""
        self.flush()
        if self.deploy_adapter is not None:
            activate(self.model, self.groups, self.deploy_adapter)
        self.model.eval()
        yield self.model

    def state_dict(self) -> dict:
        """Optimizer and estimator state (weights are saved separately by the checkpoint)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load")


def batch_loss(model: nn.Module, batch, objective: str) -> torch.Tensor:
    """Mean training loss of one encoded batch."""

    return example_losses(candidate_scores(model, batch), batch.labels, objective).mean()


def split_losses(model: nn.Module, batch, sizes: list[int], objective: str) -> list[torch.Tensor]:
    """One forward over a batch made of consecutive parts of `sizes` examples: each part's mean loss."""

    losses = example_losses(candidate_scores(model, batch), batch.labels, objective)
    return [part.mean() for part in torch.split(losses, sizes)]


def make_schedule(kind: str, peak: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """The learning-rate schedule `kind` (constant | linear | cosine) as a function step -> lr."""
    if kind == "constant":
        return constant(peak, warmup_steps)
    if kind == "linear":
        return linear(peak, total_steps, warmup_steps)
    if kind == "cosine":
        return cosine(peak, total_steps, warmup_steps)
    raise ZofoError(f"unknown schedule {kind!r}", "use constant, linear or cosine")
