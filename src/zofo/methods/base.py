"""What every training method is to the loop: `step()`, the deployed model, and its state.

The loop never asks which method it runs; a method differs from the others only in its `step()`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from zofo.config import OptimConfig
from zofo.errors import ZofoError
from zofo.evaluation.objectives import example_losses
from zofo.evaluation.scoring import CandidateBatch, candidate_scores, example_pieces
from zofo.evaluation.static import StaticBatch, static_losses
from zofo.models.adapters import ParamGroups, activate
from zofo.ranks import Ranks
from zofo.registry import METHODS
from zofo.tasks.streams import Batches
from zofo.zo.options import ZOOptions
from zofo.zo.schedules import Schedule, constant, cosine, linear
from zofo.zo.trajectory import Trajectory


@dataclass(frozen=True)
class Settings:
    """What every method may read besides its own options: plain values built from the config at the boundary
    (the run's objective, length and seed, the learning rates of `optim`, the shared ZO settings of `zo`), and
    the ranks of a data-parallel run (one process by default), over which a method averages what it estimates."""

    objective: str = "ce"
    steps: int = 1000
    seed: int = 0
    cuda_graphs: bool = True     # on CUDA: replay ZO probes and FO steps as CUDA graphs
    max_rows: int | None = None  # rows one forward takes at most: batches cut into pieces of whole examples
    optim: OptimConfig = field(default_factory=OptimConfig)
    zo: ZOOptions = field(default_factory=ZOOptions)
    ranks: Ranks = field(default_factory=Ranks, compare=False)

    @property
    def graphed(self) -> bool:
        """Whether steps may replay CUDA graphs (on a CUDA device): asked for, and over fixed-shape batches, which
        batches taken in pieces (`max_rows`) are not."""
        return self.cuda_graphs and self.max_rows is None

    def schedule(self, peak: float) -> Schedule:
        """The configured learning-rate schedule over this run's steps, peaking at ``peak``."""
        return make_schedule(self.optim.schedule, peak, self.steps, self.optim.warmup_steps)


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
    #: whether its steps can take a batch in pieces of at most `Settings.max_rows` rows (train.max_rows)
    takes_pieces: ClassVar[bool] = False
    #: whether it trains on a backbone sharded by FSDP2 (train.fsdp): the backbone trained by ZO-SGD, each rank its
    #: rows, or frozen; PEFT modules whole on every rank
    shards_backbone: ClassVar[bool] = False

    #: the YAML section of the method's own options (None: it has none) and their frozen dataclass, whose
    #: ``check()`` refuses bad values; methods sharing a section share the dataclass
    section: ClassVar[str | None] = None
    Options: ClassVar[type | None] = None

    def __init__(self, model: nn.Module, groups: ParamGroups, batches: Batches, settings: Settings,
                 options: Any = None):
        self.model = model
        self.groups = groups
        self.batches = batches
        self.settings = settings
        self.options = options if options is not None or self.Options is None else self.Options()
        self.objective = settings.objective
        model.eval()  # every method trains in eval mode: no dropout, so ZO probes and resumes are exact

    @classmethod
    def check(cls, name: str, peft_kind: str | None, options: Any) -> None:
        """Refuse what this method (registered as ``name``) cannot run with: a PEFT kind it has no use for, no
        PEFT module where it trains one, options that their own ``check()`` refuses."""
        if not cls.adapter_names and peft_kind not in (None, "none"):
            takers = ", ".join(n for n in METHODS if METHODS.get(n).adapter_names)
            raise ZofoError(f"--peft {peft_kind} does not apply to method {name} (it trains no PEFT module)",
                            f"drop --peft, or choose one of: {takers}", "peft.kind")
        if cls.adapter_names and peft_kind == "none":
            raise ZofoError(f"method {name} needs a PEFT module", "use --peft lora, prefix or prompt", "peft.kind")
        if options is not None:
            options.check()

    @abstractmethod
    def step(self, step: int) -> dict[str, float]:
        """One training step; returns the numbers to log (at least `loss`)."""

    def trainable(self) -> dict[str, nn.Parameter]:
        """Every parameter this method changes (what best-on-dev checkpoints keep)."""
        params = dict(self.groups.backbone) if self.trains_backbone else {}
        for adapter in self.groups.adapters.values():
            params.update(adapter)
        return params

    def trained_group(self) -> dict[str, nn.Parameter]:
        """What a single-level method trains: the backbone (``trains_backbone``), else its deployed PEFT module."""
        return self.groups.backbone if self.trains_backbone else self.groups.adapter(self.deploy_adapter)

    def flush(self) -> None:
        """Apply any update still pending (deferred ZO updates); no-op for most methods."""
        return None

    def demonstrations(self) -> int:
        """Demonstrations placed before each prompt when the deployed model is evaluated (in-context learning)."""
        return 0

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


def batch_loss(model: nn.Module, batch: CandidateBatch | Mapping[str, torch.Tensor], objective: str,
               max_rows: int | None = None) -> torch.Tensor:
    """Mean training loss of one batch: an encoded batch, or a fixed-shape batch's tensors (`StaticBatch.tensors`,
    what a CUDA graph replays; its padding rounds the last bits differently). `max_rows`: an encoded batch goes
    through forwards of at most that many rows (`piece_losses`), which bounds memory under no_grad (a ZO probe);
    to backpropagate in pieces use `batch_backward`."""
    if isinstance(batch, Mapping):
        return static_losses(model, StaticBatch(**batch), objective).mean()
    pieces = piece_losses(model, batch, objective, max_rows)
    total = next(pieces)
    for piece in pieces:
        total = total + piece
    return total


def piece_losses(model: nn.Module, batch: CandidateBatch, objective: str,
                 max_rows: int | None) -> Iterator[torch.Tensor]:
    """The batch's mean loss in pieces of whole examples of at most `max_rows` rows: each piece's mean loss weighted
    by its share of the examples, so that they sum to the batch's mean (one piece, None: the batch's mean)."""
    n = int(batch.labels.shape[0])
    for piece in example_pieces(batch, max_rows):
        losses = example_losses(candidate_scores(model, piece), piece.labels, objective)
        share = int(piece.labels.shape[0])
        yield losses.mean() if share == n else losses.mean() * (share / n)


def batch_backward(model: nn.Module, batch: CandidateBatch, objective: str, max_rows: int | None = None,
                   weight: float | None = None) -> torch.Tensor:
    """Backward of [weight x] the batch's mean loss, a piece of at most `max_rows` rows at a time (the gradients
    accumulate and each piece's graph is freed before the next, so memory is a piece's); returns the mean loss,
    detached."""
    total = None
    for piece in piece_losses(model, batch, objective, max_rows):
        (piece if weight is None else weight * piece).backward()
        total = piece.detach() if total is None else total + piece.detach()
    return total


def split_losses(model: nn.Module, batch, sizes: list[int], objective: str) -> list[torch.Tensor]:
    """One forward over a batch made of consecutive parts of `sizes` examples: each part's mean loss."""

    losses = example_losses(candidate_scores(model, batch), batch.labels, objective)
    return [part.mean() for part in torch.split(losses, sizes)]


SCHEDULES = ("constant", "linear", "cosine")


def make_schedule(kind: str, peak: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """The learning-rate schedule `kind` (constant | linear | cosine) as a function step -> lr."""
    if kind == "constant":
        return constant(peak, warmup_steps)
    if kind == "linear":
        return linear(peak, total_steps, warmup_steps)
    if kind == "cosine":
        return cosine(peak, total_steps, warmup_steps)
    raise ZofoError(f"unknown schedule {kind!r}", f"use {', '.join(SCHEDULES)}")
