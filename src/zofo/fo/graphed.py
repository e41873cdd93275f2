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

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from zofo.fo.sr_adam import CHUNK_ELEMENTS, SRAdam, chunks
from zofo.ranks import Ranks
from zofo.zo.graphs import ShapeGraphs, batch_rows
from zofo.zo.rounding import LOW_PRECISION

Inputs = Mapping[str, Tensor]


def make_adam(kind: type[torch.optim.Adam], params: list[nn.Parameter], lr: float, weight_decay: float = 0.0,
              graphed: bool = False) -> torch.optim.Adam:
    """Adam or AdamW; `graphed`: capturable (state and step counters on the device, learning rate a device
    tensor), as a `GraphedStep` needs. bf16 / fp16 parameters get `SRAdam` (float32 moments, stochastically
    rounded updates): torch's Adam would lose every update below half an ulp of the weight."""
    lr_arg = torch.tensor(lr, dtype=torch.float32, device=params[0].device) if graphed else lr
    if any(p.dtype in LOW_PRECISION for p in params):
        return SRAdam(params, lr=lr_arg, weight_decay=weight_decay, decoupled=kind is torch.optim.AdamW,
                      capturable=graphed)
    if not graphed:
        return kind(params, lr=lr, weight_decay=weight_decay)
    return kind(params, lr=lr_arg, weight_decay=weight_decay, capturable=True, foreach=True)


def init_optimizer_state(optimizer: torch.optim.Optimizer, chunk_elements: int = CHUNK_ELEMENTS) -> None:
    """Create the optimizer's state now (a capture must not allocate it), leaving parameters and the state's
    meaning untouched: one step of zero gradient at learning rate 0 (a chunk of parameters at a time, so that the
    zero gradients are not a copy of the model), then every step counter back to 0."""
    # an empty entry counts as missing: `optimizer.state` is a defaultdict, so reading it leaves one behind, and Adam
    # would then create the state lazily inside the first captured step (every replay resetting the moments)
    missing = [p for group in optimizer.param_groups for p in group["params"] if not optimizer.state.get(p)]
    if not missing:
        return
    saved = [(group["lr"], group.get("weight_decay", 0.0)) for group in optimizer.param_groups]
    every = [p for group in optimizer.param_groups for p in group["params"]]
    saved_grads = {p: p.grad for p in every}
    for group in optimizer.param_groups:
        group["lr"] = torch.zeros_like(group["lr"]) if isinstance(group["lr"], Tensor) else 0.0
        group["weight_decay"] = 0.0  # Adam's L2 term would put wd * theta into the moments of this step
    for part in chunks([p.numel() for p in missing], chunk_elements):
        chosen = set(missing[part.start : part.stop])
        for p in every:  # a parameter without a gradient is skipped: only the chunk's missing states are touched
            p.grad = torch.zeros_like(p) if p in chosen else None
        optimizer.step()
    for group, (lr, weight_decay) in zip(optimizer.param_groups, saved, strict=True):
        group["lr"], group["weight_decay"] = lr, weight_decay
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


class GraphedStep:
    """``step(inputs, lr)``: grads of ``params`` <- 0, ``backward_fn(inputs)``, ``optimizer.step()`` at ``lr``.

    ``backward_fn`` runs the forward and every backward pass of the step and returns the values to log, as
    one detached tensor. ``capture=False`` (and any parameters not on a CUDA device) run the same calls
    eagerly, with ``inputs`` in whatever form ``backward_fn`` takes. If a capture fails, a warning says why and
    every later step runs eagerly. ``pool``, ``rows`` (what a replay counts as work, forward and backward): see
    `zo.graphs.ShapeGraphs`, which captures, replays and falls back. Under data parallelism (``ranks``) the
    gradients are averaged over the ranks before the optimizer steps, and the step runs eagerly (the all-reduce
    is not captured into a graph).
    """

    def __init__(self, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                 backward_fn: Callable[[Inputs], Tensor], capture: bool = True, pool: tuple | None = None,
                 rows: Callable[[Inputs], int] = batch_rows, ranks: Ranks | None = None):
        self.params, self.optimizer, self.backward_fn = params, optimizer, backward_fn
        self.ranks = ranks or Ranks()
        capture = capture and params[0].is_cuda and not self.ranks.parallel
        self.graphs = ShapeGraphs("FO step", capture, pool, rows, backward=True)

    @property
    def capture(self) -> bool:
        """Whether steps are replayed from CUDA graphs (False after a failed capture)."""
        return self.graphs.capture

    @capture.setter
    def capture(self, on: bool) -> None:
        self.graphs.capture = on

    @property
    def captured(self) -> int:
        """Number of input shapes captured so far."""
        return self.graphs.captured

    def reset(self) -> None:
        """Forget the captured graphs (after the optimizer's state was replaced, e.g. by a resume)."""
        self.graphs.reset()

    def __call__(self, inputs: Inputs, lr: float) -> Tensor:
        set_lr(self.optimizer, lr)
        return self.graphs.run(inputs, self._step, self._warm_up, lambda: self._step(inputs))

    def _step(self, inputs: Inputs) -> Tensor:
        self._ensure_grads()
        self._zero_grads()
        values = self.backward_fn(inputs)
        self.ranks.average_grads_(self.params)
        self.optimizer.step()
        return values

    def _warm_up(self, inputs: Inputs) -> None:
        """Before a capture: static gradients and the optimizer's state made, then forward and backward
        (lazy initialisations) without an optimizer step, so nothing moves."""
        self._ensure_grads()
        init_optimizer_state(self.optimizer)
        self._zero_grads()
        self.backward_fn(inputs)

    def _zero_grads(self) -> None:
        torch._foreach_zero_([p.grad for p in self.params])

    def _ensure_grads(self) -> None:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
