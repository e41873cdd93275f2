"""A backprop optimizer with the ZO optimizer's interface, so that a method swaps one for the other.

    estimate_of(L, inputs, t)  ->  (L(theta), grad_theta L)          by backprop (no probes, no seeds)
    apply(estimate, t)         :   theta <- Adam(theta, grad, lr(t))

Bilevel FO (Algorithm 1) is Bilevel ZOFO with this in place of `zo.ZOOptimizer` for the backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zofo.fo.graphed import make_adam, set_lr
from zofo.ranks import Ranks
from zofo.zo.options import ZOOptions
from zofo.zo.schedules import Schedule


@dataclass
class Gradient:
    """What `BackpropOptimizer.estimate_of` returns: the loss (in a list, as a ZO estimate's probe losses) and
    the gradient of every parameter, in the order of the optimizer's parameters."""

    losses: list[float]
    grads: list[Tensor]


class BackpropOptimizer:
    """theta <- Adam(theta, grad_theta L) with the true gradient, over ``params``; takes the arguments of
    `zo.ZOOptimizer` (``options`` and ``seed`` unused: nothing is probed) and keeps no seed trajectory. Under
    data parallelism (``ranks``) the loss and the gradient are averaged over the ranks' shares of the batch."""

    trajectory = None  # backprop steps are not described by seeds

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], options: ZOOptions, lr: Schedule,
                 seed: int, weight_decay: float = 0.0, ranks: Ranks | None = None):
        self.params, self.lr, self.ranks = params, lr, ranks or Ranks()
        self.optimizer = make_adam(torch.optim.Adam, list(params.values()), lr(0), weight_decay)

    def estimate_of(self, loss_fn: Callable[[Any], Tensor], inputs: Any, step: int, probes: Any = None) -> Gradient:
        """L(inputs) and its gradient by backprop; any .grad already there is left untouched."""
        params = list(self.params.values())
        for param in params:
            param.requires_grad_(True)
        value = loss_fn(inputs)
        grads = torch.autograd.grad(value, params)
        for param in params:
            param.requires_grad_(False)
        value, grads = self.ranks.mean_with(value, grads)
        return Gradient([value.item()], grads)

    def apply(self, gradient: Gradient, step: int) -> dict[str, float]:
        for param, grad in zip(self.params.values(), gradient.grads, strict=True):
            param.grad = grad
        set_lr(self.optimizer, self.lr(step))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"lr": self.lr(step)}

    def flush(self) -> None:
        """Adam applies every update at once: nothing is ever pending."""
        return None

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
