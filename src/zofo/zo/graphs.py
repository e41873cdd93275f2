"""CUDA-graph replay of ZO probes: each input shape is captured once, then a probe is one graph launch.

A small model's forward is launch-bound (SmolLM2-135M: hundreds of kernels, ~20 ms of host time for a
few ms of GPU work). `GraphedProbes` captures "perturbed(model, params, seed, scale): loss_fn(inputs)"
once per input shape, with the seed and scale read from device tensors, and replays it with new inputs
copied into the captured buffers. Probing stays exact (theta is never written) and u is the same function
of (seed, name, element) as in eager mode. All graphs share one memory pool (they never run at once).
`ShapeGraphs` is the mechanism (capture per shape, replay, eager fallback); `graphed_step` uses it too.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from zofo.models.work import count_replayed, uncounted

from .directions import Direction
from .perturb import perturbed, perturbed_loss

Inputs = Mapping[str, Tensor]
T = TypeVar("T")

# One capture at a time in a process: entering `torch.cuda.graph` synchronizes the whole device, which CUDA
# refuses while another thread's stream is capturing (runs trained together, `zofo.run.concurrent`).
_CAPTURING = threading.Lock()
_WARM_UP_STREAMS: dict[int, torch.cuda.Stream] = {}


def warm_up_stream() -> torch.cuda.Stream:
    """The one side stream of the current device that every warm-up before a capture runs on (taken under
    `_CAPTURING`). cuBLAS keeps a workspace per stream and thread that it never frees (32 MiB each on an H200),
    so a new stream per capture left one or two behind for every graph: 64 MiB per input shape."""
    device = torch.cuda.current_device()
    if device not in _WARM_UP_STREAMS:
        _WARM_UP_STREAMS[device] = torch.cuda.Stream(device)
    return _WARM_UP_STREAMS[device]


@contextmanager
def rng_restored_on_failure() -> Iterator[None]:
    """Give the device's default generator a clean copy of its state if the capture inside fails.

    torch's ``capture_end`` raises before it tells the generator that the capture is over, so after a failed
    capture the generator still believes one is under way and every later random op on the device raises
    "Offset increment outside graph capture encountered unexpectedly" (torch 2.11): one model that cannot be
    captured would break dropout, ``torch.randn`` and every later capture in the process. Graphs captured
    before keep the old state object; zofo's graphs draw no torch random numbers.
    """
    generator = torch.cuda.default_generators[torch.cuda.current_device()]
    clean = generator.clone_state()
    try:
        yield
    except BaseException:
        generator.graphsafe_set_state(clean)
        raise


def capture(record: Callable[[], T], warm_up: Callable[[], object],
            pool: tuple | None = None) -> tuple[torch.cuda.CUDAGraph, T]:
    """``record`` captured in a new CUDA graph, after ``warm_up`` ran twice on `warm_up_stream` (lazy
    initialisations; not counted as work); returns the graph and what ``record`` returned. Where other threads
    capture, hold `_CAPTURING`. A failed capture raises with the device's generator restored."""
    side = warm_up_stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), uncounted():
        for _ in range(2):
            warm_up()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with rng_restored_on_failure(), torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        output = record()  # thread_local: other runs' threads may launch meanwhile
    return graph, output


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, Tensor]   # the buffers the graph reads
    output: Tensor              # the buffer the graph writes


def batch_rows(inputs: Inputs) -> int:
    """Rows one call runs through the model when it reads each fixed-shape batch of ``inputs`` once: the rows of
    every ``input_ids`` (``<part>.input_ids`` for batches of several parts)."""
    return sum(t.shape[0] for name, t in inputs.items() if name.rsplit(".", 1)[-1] == "input_ids")


def shape_key(inputs: Inputs) -> tuple:
    """What a captured graph is keyed by: every input's name, shape and dtype."""
    return tuple((name, tuple(t.shape), t.dtype) for name, t in sorted(inputs.items()))


class ShapeGraphs:
    """One CUDA graph per input shape, replayed with new inputs copied into the buffers it was captured with.

    ``run(inputs, record, warm_up, eager)``: the first call for a shape runs ``warm_up`` twice on a side stream
    (lazy initialisations; not counted as work), then captures ``record``; every call replays that shape's
    graph and returns a copy of what ``record`` returned. ``capture=False`` calls ``eager()`` instead, and so
    does every call after a failed capture (with a warning naming ``what``). ``pool`` (a
    `torch.cuda.graph_pool_handle()`) lets graphs that never run at once share memory: each replay's output
    is copied out at once, so one graph's temporaries may reuse another's output buffer.

    Replays bypass the hook that counts training work (`zofo.models.work`), so each replay counts its own:
    ``rows(inputs)`` rows forward, and as many backward when ``backward`` is set.
    """

    def __init__(self, what: str, capture: bool, pool: tuple | None = None,
                 rows: Callable[[Inputs], int] = batch_rows, backward: bool = False):
        self.what, self.capture, self._pool = what, capture, pool
        self.rows, self.backward = rows, backward
        self._graphs: dict[tuple, _Captured] = {}

    @property
    def captured(self) -> int:
        """Number of input shapes captured so far."""
        return len(self._graphs)

    def reset(self) -> None:
        """Forget the captured graphs (after a buffer they read was replaced)."""
        self._graphs.clear()

    def run(self, inputs: Inputs, record: Callable[[Inputs], Tensor], warm_up: Callable[[Inputs], object],
            eager: Callable[[], Tensor]) -> Tensor:
        if not self.capture:
            return eager()
        key = shape_key(inputs)
        if key not in self._graphs:
            with _CAPTURING:
                try:
                    self._graphs[key] = self._capture(inputs, record, warm_up)
                except Exception as err:  # noqa: BLE001 -- any capture failure falls back to eager calls
                    warnings.warn(f"CUDA graph capture of the {self.what} failed ({type(err).__name__}: {err}); "
                                  "running eagerly from now on", RuntimeWarning, stacklevel=3)
                    self.capture = False
                    torch.cuda.synchronize()
            if not self.capture:
                return eager()
        captured = self._graphs[key]
        for name, t in inputs.items():
            captured.inputs[name].copy_(t, non_blocking=True)
        captured.graph.replay()
        rows = self.rows(inputs)
        count_replayed(rows, rows if self.backward else 0)
        return captured.output.clone()

    def _capture(self, inputs: Inputs, record: Callable[[Inputs], Tensor],
                 warm_up: Callable[[Inputs], object]) -> _Captured:
        static = {name: t.clone() for name, t in inputs.items()}
        graph, output = capture(lambda: record(static), lambda: warm_up(static), self._pool)
        self._pool = graph.pool()
        return _Captured(graph, static, output)


class GraphedProbes:
    """``probes(inputs, seed, scale)`` = ``loss_fn(inputs)`` at theta + scale u(seed) for ``params``.

    ``capture=False`` (and any model not on a CUDA device) probes eagerly through the same calls. If a
    capture fails (a model whose forward syncs with the host, say), a warning says why and every later
    probe runs eagerly. ``pool``, ``rows`` (what a replay counts as work): see `ShapeGraphs`.
    """

    def __init__(self, model: nn.Module, params: Mapping[str, nn.Parameter],
                 loss_fn: Callable[[Inputs], Tensor], direction: Direction = "gaussian", capture: bool = True,
                 pool: tuple | None = None, rows: Callable[[Inputs], int] = batch_rows):
        self.model, self.params, self.loss_fn, self.direction = model, params, loss_fn, direction
        device = next(iter(params.values())).device
        self.graphs = ShapeGraphs("ZO probe", capture and device.type == "cuda", pool, rows)
        if self.graphs.capture:
            self.seed = torch.zeros(1, dtype=torch.int64, device=device)
            self.scale = torch.zeros(1, dtype=torch.float32, device=device)

    @property
    def capture(self) -> bool:
        """Whether probes are replayed from CUDA graphs (False after a failed capture)."""
        return self.graphs.capture

    @property
    def captured(self) -> int:
        """Number of input shapes captured so far."""
        return self.graphs.captured

    def __call__(self, inputs: Inputs, seed: int, scale: float) -> Tensor:
        if self.graphs.capture:  # the captured probe reads them from the device
            self.seed.fill_(seed)
            self.scale.fill_(scale)
        return self.graphs.run(inputs, self._probe, self._probe, lambda: self._eager(inputs, seed, scale))

    def _eager(self, inputs: Inputs, seed: int, scale: float) -> Tensor:
        with torch.no_grad():
            return perturbed_loss(lambda: self.loss_fn(inputs), self.model, self.params, seed, scale, self.direction)

    def _probe(self, inputs: Inputs) -> Tensor:
        with torch.no_grad(), perturbed(self.model, self.params, self.seed, self.scale, self.direction):
            return self.loss_fn(inputs)
