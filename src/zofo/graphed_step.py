"""CUDA-graph replay of first-order steps: zero grads, backward, optimizer step, as one graph launch.

SmolLM2-135M's forward and backward are launch-bound (hundreds of small kernels, tens of ms of host time for
a few ms of GPU work), and so are FO-PEFT, FO full fine-tuning and Bilevel ZOFO's K lower steps and p-step.
`GraphedStep` captures

    grads <- 0;  values = backward_fn(inputs)   (forward + backward, grads accumulate);  optimizer.step()

once per input shape and replays it with new inputs copied into the captured buffers. Everything the graph
touches is allocated before the capture and never replaced: the gradients are static zero tensors (zeroed
inside the graph, not set to None), the optimizer's state is created by `init_optimizer_state` (a step of
zero gradient at learning rate 0 that leaves every parameter bit-identical, then the step counters reset),
and the learning rate is a device tensor (Adam's `capturable=True`), filled before each replay so that
schedules need no recapture.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zofo.work import uncounted
from zofo.zo.graphs import shape_key

Inputs = Mapping[str, Tensor]


def make_adam(kind: type[torch.optim.Adam], params: list[nn.Parameter], lr: float, weight_decay: float = 0.0,
              graphed: bool = False) -> torch.optim.Adam:
    """Adam or AdamW; `graphed`: capturable (state and step counters on the device, learning rate a device
    tensor), as a `GraphedStep` needs."""
    if not graphed:
        return kind(params, lr=lr, weight_decay=weight_decay)
    lr_tensor = torch.tensor(lr, dtype=torch.float32, device=params[0].device)
    return kind(params, lr=lr_tensor, weight_decay=weight_decay, capturable=True, foreach=True)


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state now (a capture must not allocate it), leaving parameters and the state's
    meaning untouched: one step of zero gradient at learning rate 0, then every step counter back to 0."""
    missing = [p for group in optimizer.param_groups for p in group["params"] if p not in optimizer.state]
    if not missing:
        return
    saved_lrs = [group["lr"] for group in optimizer.param_groups]
    every = [p for group in optimizer.param_groups for p in group["params"]]
    saved_grads = {p: p.grad for p in every}
    chosen = set(missing)
    for group in optimizer.param_groups:
        group["lr"] = torch.zeros_like(group["lr"]) if isinstance(group["lr"], Tensor) else 0.0
    for p in every:  # a parameter without a gradient is skipped: only the missing states are touched
        p.grad = torch.zeros_like(p) if p in chosen else None
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, saved_lrs, strict=True):
        group["lr"] = lr
    for p in every:
        p.grad = saved_grads[p]
    for p in missing:
        step = optimizer.state[p].get("step")
        if isinstance(step, Tensor):
            step.zero_()
        elif step is not None:
            optimizer.state[p]["step"] = 0


def plain_state_dict(optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` with tensor learning rates as floats (a checkpoint loads into either kind)."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group["lr"], Tensor):
            group["lr"] = group["lr"].item()
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, keeping device-tensor learning rates the tensors they are."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        if isinstance(lr, Tensor):
            lr.fill_(float(group["lr"]))
            group["lr"] = lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate to `lr`, in place where it is a device tensor (a captured graph reads it)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, Tensor]   # the buffers the graph reads
    values: Tensor              # the buffer the graph writes (backward_fn's result)


class GraphedStep:
    """``step(inputs, lr)``: grads of ``params`` <- 0, ``backward_fn(inputs)``, ``optimizer.step()`` at ``lr``.

    ``backward_fn`` runs the forward and every backward pass of the step and returns the values to log, as
    one detached tensor. ``pool`` (a `torch.cuda.graph_pool_handle()`) lets graphs that never run at once
    share their memory (a method's several graphs; each replay's values are copied out at once, so one
    graph's temporaries may reuse another's output buffer); by default this object's graphs share one pool.
    ``capture=False`` (and any parameters not on a CUDA device) run the same calls eagerly. If a capture
    fails, a warning says why and every later step runs eagerly.
    """

    def __init__(self, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                 backward_fn: Callable[[Inputs], Tensor], capture: bool = True, pool: tuple | None = None):
        self.params, self.optimizer, self.backward_fn = params, optimizer, backward_fn
        self.capture = capture and params[0].is_cuda
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = pool

    @property
    def captured(self) -> int:
        """Number of input shapes captured so far."""
        return len(self._graphs)

    def reset(self) -> None:
        """Forget the captured graphs (after the optimizer's state was replaced, e.g. by a resume)."""
        self._graphs.clear()

    def __call__(self, inputs: Inputs, lr: float) -> Tensor:
        set_lr(self.optimizer, lr)
        if not self.capture:
            return self._step(inputs)
        key = shape_key(inputs)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(inputs)
            except Exception as err:  # noqa: BLE001 -- any capture failure falls back to eager steps
                warnings.warn(f"CUDA graph capture of the FO step failed ({type(err).__name__}: {err}); "
                              "stepping eagerly from now on", RuntimeWarning, stacklevel=2)
                self.capture = False
                torch.cuda.synchronize()
                return self._step(inputs)
        captured = self._graphs[key]
        for name, t in inputs.items():
            captured.inputs[name].copy_(t, non_blocking=True)
        captured.graph.replay()
        return captured.values.clone()

    def _zero_grads(self) -> None:
        torch._foreach_zero_([p.grad for p in self.params])

    def _step(self, inputs: Inputs) -> Tensor:
        self._ensure_grads()
        self._zero_grads()
        values = self.backward_fn(inputs)
        self.optimizer.step()
        return values

    def _ensure_grads(self) -> None:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def _capture(self, inputs: Inputs) -> _Captured:
        """Warm up forward and backward on a side stream (lazy initialisations; no optimizer step, so
        nothing moves), create the optimizer state, then record one whole step."""
        static = {name: t.clone() for name, t in inputs.items()}
        self._ensure_grads()
        init_optimizer_state(self.optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), uncounted():
            for _ in range(2):
                self._zero_grads()
                self.backward_fn(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._zero_grads()
            values = self.backward_fn(static)
            self.optimizer.step()
        self._pool = graph.pool()
        return _Captured(graph, static, values)
