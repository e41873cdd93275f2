"""What a training step costs in model passes, counted the same way for every method.

One unit is one sequence (a candidate row) through the whole model.  A forward hook on the input embeddings
sees every forward with its number of rows; a forward taken with autograd on is followed by a backward over
the same rows (every method backpropagates every loss it builds with grad).  CUDA-graph replays bypass hooks,
so the graph objects (`zofo.zo.graphs`) count each replay's rows themselves (``count_replayed``, into the counter
this thread is counting with); the capture itself is not counted (it records kernels, it runs nothing), nor are
the warm-up passes before it (``uncounted``), which change nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

_state = threading.local()  # runs that share a process (zofo.run.concurrent) each pause their own counting


def _paused() -> int:
    return getattr(_state, "paused", 0)


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """Passes run inside (by this thread) are not training work (the warm-up before a CUDA-graph capture)."""
    _state.paused = _paused() + 1
    try:
        yield
    finally:
        _state.paused -= 1


def count_replayed(forward_rows: int, backward_rows: int = 0) -> None:
    """Count a CUDA-graph replay's rows as work of the counter this thread is counting with (if any)."""
    counter = getattr(_state, "counter", None)
    if counter is not None and not _paused():
        counter.work.forward_rows += forward_rows
        counter.work.backward_rows += backward_rows


@dataclass
class Work:
    forward_rows: int = 0
    backward_rows: int = 0


class WorkCounter:
    """Counts rows through ``model`` while ``counting()`` is active (training steps, not evaluation)."""

    def __init__(self, model: nn.Module):
        self.work = Work()
        self._active = False
        self._handle = model.get_input_embeddings().register_forward_hook(self._seen)

    def _seen(self, module: nn.Module, args, output: torch.Tensor) -> None:
        if not self._active or _paused() or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
            return
        rows = output.shape[0]
        self.work.forward_rows += rows
        if torch.is_grad_enabled():
            self.work.backward_rows += rows

    @contextlib.contextmanager
    def counting(self) -> Iterator[Work]:
        """Count the rows of this thread's passes, and of its CUDA-graph replays (`count_replayed`)."""
        self._active, outer = True, getattr(_state, "counter", None)
        _state.counter = self
        try:
            yield self.work
        finally:
            self._active, _state.counter = False, outer

    def close(self) -> None:
        self._handle.remove()
