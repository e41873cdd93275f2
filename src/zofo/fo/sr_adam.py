"""Adam(W) for bf16 / fp16 weights: float32 moments and stochastically rounded weight updates.

torch's Adam on bf16 parameters keeps its moments in bf16 and rounds theta - lr * m / sqrt(v) to the nearest
bf16, so an update below half an ulp of the weight is lost, every step: at lr 1e-5 an Adam step is about 1e-5,
while half an ulp of a weight near 0.03 is 6e-5. Full fine-tuning in bf16 then hardly moves the model
(docs/RESULTS.md, section 9). This optimizer keeps exp_avg and exp_avg_sq in float32, computes the new weight
in float32 and writes it back with stochastic rounding (``zo.round_to``, unbiased: E[R(x)] = x), as the ZO
updates do. Per step and parameter:

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2                     (float32)
    x <- theta (1 - lr wd) - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
    theta <- R(x)      (the rounding stream of (t, parameter key), so a step is reproducible)

With ``decoupled=False`` the weight decay is Adam's L2 term (g <- g + wd theta) instead. ``capturable``: the
step counters live on the parameters' device and the learning rate may be a device tensor, so that a CUDA
graph can capture a step (`graphed_step.GraphedStep`).

The math runs on lists of parameters (foreach ops), a chunk of at most ``CHUNK_ELEMENTS`` elements at a time (or one
parameter, where a parameter is larger), so that its float32 scratch (the new weights, the gradients, the
denominators) is three chunks, not three copies of the model: 20 GB at 1.5B parameters
(docs/RESULTS.md, section 23). Each element's arithmetic is the same in any chunking, so the chunks change no bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from zofo.zo.kernels.ops import round_to
from zofo.zo.kernels.philox import M32, hash32_int

CHUNK_ELEMENTS = 1 << 26  # 256 MiB of float32 per scratch list: a few launches per chunk, scratch bounded


def working_dtype(p: Tensor) -> torch.dtype:
    """The dtype of the moments and of the new weight before rounding: float32, or float64 for float64 weights."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class SRAdam(torch.optim.Optimizer):
    """Adam (``decoupled=False``) or AdamW with float32 state and stochastic rounding into low-precision weights."""

    def __init__(self, params: Iterable[Tensor], lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = True, capturable: bool = False,
                 seed: int = 0):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled,
                        capturable=capturable)
        super().__init__(params, defaults)
        self.seed = seed
        self.chunk_elements = CHUNK_ELEMENTS

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, then the moments as saved (torch would cast them to the weights' bf16), every state
        tensor a copy of its own (torch shares the step counters with ``state_dict``)."""
        moments = {i: {k: v for k, v in s.items() if k != "step"} for i, s in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for i, p in zip(ids, params, strict=True):
            if "step" in self.state[p]:
                self.state[p]["step"] = self.state[p]["step"].clone()
            for key, value in moments.get(i, {}).items():
                self.state[p][key] = value.to(device=p.device, dtype=working_dtype(p), copy=True)

    def rounding_key(self, index: int) -> int:
        """The rounding-stream key of the index-th parameter (over all groups)."""
        return hash32_int((index ^ hash32_int(self.seed & M32)) & M32)

    def _state(self, p: Tensor, capturable: bool) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if capturable else "cpu")
            state["exp_avg"] = torch.zeros_like(p, dtype=working_dtype(p), memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=working_dtype(p), memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0
        for group in self.param_groups:
            chosen = [(p, self.rounding_key(index + i)) for i, p in enumerate(group["params"]) if p.grad is not None]
            index += len(group["params"])
            for part in chunks([p.numel() for p, _ in chosen], self.chunk_elements):
                params, keys = zip(*chosen[part.start : part.stop], strict=True)
                self._update(group, list(params), list(keys))
        return loss

    def _update(self, group: dict, params: list[Tensor], keys: list[int]) -> None:
        """One step of a chunk of ``group``'s parameters that have a gradient: the math on whole lists (foreach
        ops, a few kernel launches for all of them), then one rounding per parameter."""
        (b1, b2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
        states = [self._state(p, group["capturable"]) for p in params]
        steps, ms, vs = ([state[k] for state in states] for k in ("step", "exp_avg", "exp_avg_sq"))
        torch._foreach_add_(steps, 1)
        xs = [p.to(m.dtype, copy=True) for p, m in zip(params, ms, strict=True)]  # the new weights, before rounding
        gs = [p.grad.to(m.dtype) for p, m in zip(params, ms, strict=True)]
        if wd and not group["decoupled"]:
            gs = torch._foreach_add(gs, xs, alpha=wd)
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
        if wd and group["decoupled"]:
            torch._foreach_mul_(xs, 1 - lr * wd)
        # in float64 (1 - b2^t in float32 would lose four digits at t = 1), beside the weights (torch keeps a
        # step counter that is not capturable on the CPU, and a foreach op takes one device)
        ts = [t.to(device=p.device, dtype=torch.float64) for t, p in zip(steps, params, strict=True)]
        step_sizes = torch._foreach_pow(b1, ts)  # -> -lr / (1 - b1^t)
        torch._foreach_sub_(step_sizes, 1)
        torch._foreach_div_(step_sizes, lr)
        torch._foreach_reciprocal_(step_sizes)
        roots = torch._foreach_pow(b2, ts)  # -> sqrt(1 - b2^t)
        torch._foreach_neg_(roots)
        torch._foreach_add_(roots, 1)
        torch._foreach_sqrt_(roots)
        denoms = torch._foreach_sqrt(vs)  # -> (sqrt(v / (1 - b2^t)) + eps) / step size
        torch._foreach_div_(denoms, roots)
        torch._foreach_add_(denoms, group["eps"])
        torch._foreach_div_(denoms, step_sizes)
        torch._foreach_addcdiv_(xs, ms, denoms)
        seeds = torch.stack(steps).to(torch.int64)  # the rounding stream of step t
        for i, (p, x, key) in enumerate(zip(params, xs, keys, strict=True)):
            seed = seeds[i : i + 1] if seeds.device == p.device else int(seeds[i])
            p.copy_(round_to(x, p.dtype, seed, key))


def chunks(sizes: list[int], limit: int = CHUNK_ELEMENTS) -> list[range]:
    """Consecutive index ranges over items of these element counts, each holding at most ``limit`` elements (an
    item larger than ``limit`` alone): the pieces of a parameter list whose float32 scratch stays bounded."""
    out: list[range] = []
    start, size = 0, 0
    for i, n in enumerate(sizes):
        if i > start and size + n > limit:
            out.append(range(start, i))
            start, size = i, 0
        size += n
    if sizes:
        out.append(range(start, len(sizes)))
    return out
