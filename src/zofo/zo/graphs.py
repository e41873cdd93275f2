"""CUDA-graph replay of ZO probes: each input shape is captured once, then a probe is one graph launch.

A small model's forward is launch-bound (SmolLM2-135M: hundreds of kernels, ~20 ms of host time for a
few ms of GPU work). `GraphedProbes` captures "perturbed(model, params, seed, scale): loss_fn(inputs)"
once per input shape, with the seed and scale read from device tensors, and replays it with new inputs
copied into the captured buffers. Probing stays exact (theta is never written) and u is the same function
of (seed, name, element) as in eager mode. All graphs share one memory pool (they never run at once).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zofo.work import uncounted

from .directions import Direction
from .perturb import perturbed, perturbed_loss

Inputs = Mapping[str, Tensor]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, Tensor]   # the buffers the graph reads
    loss: Tensor                # the buffer the graph writes


def shape_key(inputs: Inputs) -> tuple:
    """What a captured graph is keyed by: every input's name, shape and dtype."""
    return tuple((name, tuple(t.shape), t.dtype) for name, t in sorted(inputs.items()))


class GraphedProbes:
    """``probes(inputs, seed, scale)`` = ``loss_fn(inputs)`` at theta + scale u(seed) for ``params``.

    ``capture=False`` (and any model not on a CUDA device) probes eagerly through the same calls. If a
    capture fails (a model whose forward syncs with the host, say), a warning says why and every later
    probe runs eagerly.
    """

    def __init__(self, model: nn.Module, params: Mapping[str, nn.Parameter],
                 loss_fn: Callable[[Inputs], Tensor], direction: Direction = "gaussian", capture: bool = True,
                 pool: tuple | None = None):
        self.model, self.params, self.loss_fn, self.direction = model, params, loss_fn, direction
        device = next(iter(params.values())).device
        self.capture = capture and device.type == "cuda"
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = pool  # a torch.cuda.graph_pool_handle() shared with other graphs that never run at once
        if self.capture:
            self.seed = torch.zeros(1, dtype=torch.int64, device=device)
            self.scale = torch.zeros(1, dtype=torch.float32, device=device)

    @property
    def captured(self) -> int:
        """Number of input shapes captured so far."""
        return len(self._graphs)

    def __call__(self, inputs: Inputs, seed: int, scale: float) -> Tensor:
        if not self.capture:
            return self._eager(inputs, seed, scale)
        key = shape_key(inputs)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(inputs)
            except Exception as err:  # noqa: BLE001 -- any capture failure falls back to eager probing
                warnings.warn(f"CUDA graph capture of the ZO probe failed ({type(err).__name__}: {err}); "
                              "probing eagerly from now on", RuntimeWarning, stacklevel=2)
                self.capture = False
                torch.cuda.synchronize()
                return self._eager(inputs, seed, scale)
        captured = self._graphs[key]
        for name, t in inputs.items():
            captured.inputs[name].copy_(t, non_blocking=True)
        self.seed.fill_(seed)
        self.scale.fill_(scale)
        captured.graph.replay()
        return captured.loss.clone()

    def _eager(self, inputs: Inputs, seed: int, scale: float) -> Tensor:
        with torch.no_grad():
            return perturbed_loss(lambda: self.loss_fn(inputs), self.model, self.params, seed, scale, self.direction)

    def _probe(self, inputs: Inputs) -> Tensor:
        with perturbed(self.model, self.params, self.seed, self.scale, self.direction):
            return self.loss_fn(inputs)

    def _capture(self, inputs: Inputs) -> _Captured:
        """Warm up on a side stream (lazy initialisations), then record one probe."""
        static = {name: t.clone() for name, t in inputs.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad(), uncounted():
            for _ in range(2):
                self._probe(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool), torch.no_grad():
            loss = self._probe(static)
        self._pool = graph.pool()
        return _Captured(graph, static, loss)
