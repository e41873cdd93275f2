"""The processes of a data-parallel run and what they exchange, through torch.distributed.

Every rank holds the whole model (or, sharded, its part of it: `zofo.run.distributed`), draws the same seeds and
takes its share of each global batch (B / world examples). What crosses the network per step:

    ZO estimate    the probes' losses, [probes, terms] float64 (two-sided q = 1: 16 bytes): all-reduced to
                   their mean, so every rank computes the same c_i and applies the same update; no backbone
                   weight or gradient is sent
    FO gradients   the trained parameters' .grad (PEFT adapters; the whole model for fo-full), averaged in one
                   flat all-reduce
    control        a stop/time-out flag per step, on a CPU (gloo) group so the device's queue never waits

`Ranks()` (world 1) is a single process: every method returns at once and sends nothing, so a run not launched
under torchrun computes exactly what it did before. ``sent_bytes`` counts the payload handed to the data
collectives (a ring all-reduce moves about 2 (world - 1) / world of it in and out of each rank); ``control_bytes``
the stop/time-out flags' (8 bytes a step); gathered Python objects (logged metrics, evaluation predictions) are
not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


@dataclass
class Ranks:
    """This process's place in a data-parallel run: ``rank`` of ``world``; ``control`` is the CPU (gloo) process
    group of the small host-side exchanges (None: the default group, e.g. on a gloo-only run)."""

    rank: int = 0
    world: int = 1
    control: Any = None
    sent_bytes: int = 0      # payload handed to the data collectives so far (losses, gradients)
    collectives: int = 0     # how many of them
    control_bytes: int = 0   # payload of the per-step stop/time-out flags

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder (logs, checkpoints, results): rank 0 alone."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def mean_(self, t: Tensor) -> Tensor:
        """``t`` <- its mean over the ranks, in place (every rank computed it on an equal share of the batch)."""
        if self.parallel:
            self._count(t)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(self.world)
        return t

    def mean_with(self, value: Tensor, grads: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """A loss (one element) and its gradients, each averaged over the ranks in one flat all-reduce (in the
        gradients' dtype); as they are in a single process."""
        if not self.parallel:
            return value, list(grads)
        dtype = grads[0].dtype
        flat = self.mean_(torch.cat([value.detach().reshape(1).to(dtype)] + [g.reshape(-1) for g in grads]))
        parts = torch.split(flat[1:], [g.numel() for g in grads])
        return flat[0], [part.view_as(g) for part, g in zip(parts, grads, strict=True)]

    def average_grads_(self, params: Sequence[Tensor]) -> None:
        """Every parameter's .grad <- its mean over the ranks: one flat all-reduce (None grads count as zeros)."""
        if not self.parallel or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.mean_(flat)
        for p, part in zip(params, torch.split(flat, [g.numel() for g in grads]), strict=True):
            p.grad = part.view_as(p).to(p.dtype) if p.grad is None else p.grad.copy_(part.view_as(p.grad))

    def any(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over the ranks (on the control group: the device is not waited for)."""
        if not self.parallel:
            return list(flags)
        t = torch.tensor([int(f) for f in flags], dtype=torch.int32)
        self.control_bytes += t.numel() * t.element_size()
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return [bool(v) for v in t.tolist()]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable), in rank order."""
        if not self.parallel:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=self.control)
        return out

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items of a list every rank holds: every world-th one from its rank (sizes differ by 1)."""
        return list(items[self.rank::self.world])

    def unshare(self, part: Sequence[T]) -> list[T]:
        """The whole list, in its original order, from every rank's `share` of it."""
        parts = self.gather(list(part))
        whole: list[T] = []
        for i in range(max(len(p) for p in parts)):
            whole += [p[i] for p in parts if i < len(p)]
        return whole

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier(group=self.control)

    def _count(self, t: Tensor) -> None:
        self.sent_bytes += t.numel() * t.element_size()
        self.collectives += 1
