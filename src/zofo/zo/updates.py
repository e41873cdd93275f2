"""Update rules consuming a ``ZOEstimate``; state passed in and returned (optax style).

The gradient estimate is g = (1/q) sum_i c_i u_i, regenerated from the seeds tensor by tensor.

* ``ZOSGD`` (default, MeZO): theta <- R((1 - lr*wd) theta - lr g).  In place, fused on CUDA (one
  read + one write of theta for all q directions), no gradient and no state: extra memory zero.
* ``ZOMomentum``: m <- beta m + g; theta <- R((1 - lr*wd) theta - lr m).  One float32 buffer:
  +4 bytes per parameter (+ a float32 temporary of one tensor).
* ``ZOAdam`` (the paper's setting): AdamW with bias correction on g.  Two float32 buffers: +8 bytes
  per parameter (+ one tensor's float32 temporary); for a bf16 model that is 4x the weights (5x with them).

R is stochastic rounding for bf16/fp16 weights (unbiased: E[R(x)] = x, so sub-ulp updates survive on
average), a plain cast for fp32.  Its bits are a function of (seeds[0], tensor key, element).

``probed`` (default on): for bf16/fp16 weights u_i is replaced by the direction the probes realised,
v_i = (R(theta + eps u_i) - R(theta - eps u_i)) / (2 eps) with R round-to-nearest (``ops.Probed``): c_i
is the slope along v_i, not u_i, and the two differ by about one ulp / eps -- order one for bf16.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .directions import tensor_key
from .estimators import DeviceEstimate, ZOEstimate
from .kernels.ops import Backend, Probed, combination, round_to, sgd_update_many_
from .shards import local_part


def _probed(est: ZOEstimate | DeviceEstimate, on: bool) -> Probed | None:
    return est.probed if on else None

Params = Mapping[str, nn.Parameter]


@dataclass
class UpdateState:
    """Step count and per-parameter float32 buffers (name -> {"m": ..., "v": ...})."""

    step: int = 0
    buffers: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        """A plain dict (tensors shared, not copied) for ``torch.save``."""
        return {"step": self.step, "buffers": {n: dict(b) for n, b in self.buffers.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load in place: buffers are copied into the existing ones (device and dtype kept)."""
        self.step = int(state["step"])
        for name, bufs in state["buffers"].items():
            for k, v in bufs.items():
                if name in self.buffers and k in self.buffers[name]:
                    self.buffers[name][k].copy_(v)
                else:
                    self.buffers.setdefault(name, {})[k] = v.clone()


class ZOUpdate(Protocol):
    """An update rule: ``state = rule.init(params)``; ``state = rule.apply(params, est, lr, state)``."""

    def init(self, params: Params) -> UpdateState: ...

    def apply(self, params: Params, est: ZOEstimate, lr: float, state: UpdateState) -> UpdateState: ...

    @property
    def takes_device_estimates(self) -> bool:
        """Whether `apply` takes a `DeviceEstimate` as it is, without reading it back."""
        ...


def _zeros(params: Params, names: tuple[str, ...]) -> UpdateState:
    return UpdateState(
        0,
        {
            n: {k: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for k in names}
            for n, p in params.items()
        },
    )


@dataclass(frozen=True)
class ZOSGD:
    """theta <- R((1 - lr*weight_decay) theta - lr/q sum_i c_i u_i), in place, stateless."""

    weight_decay: float = 0.0
    backend: Backend = "auto"
    probed: bool = True

    def init(self, params: Params) -> UpdateState:
        return UpdateState()

    @property
    def takes_device_estimates(self) -> bool:
        """A `DeviceEstimate`'s c_i stay on the device (a skipped step's are zeros, which leave theta
        bit-identical), unless weight decay needs to know on the host whether the step was skipped."""
        return not self.weight_decay

    def apply(self, params: Params, est: ZOEstimate | DeviceEstimate, lr: float, state: UpdateState) -> UpdateState:
        """A `DeviceEstimate` is applied without a host sync where `takes_device_estimates`, else resolved first.
        lr 0 launches nothing: theta keeps every bit (signed zeros too) whatever the kernel's arithmetic."""
        if isinstance(est, DeviceEstimate) and not self.takes_device_estimates:
            est = est.resolve()
        if isinstance(est, ZOEstimate) and est.skipped:
            return state
        if lr == 0:
            return UpdateState(state.step + 1, state.buffers)
        if isinstance(est, DeviceEstimate):
            coefs = (lr * est.projected_grads / est.q).float()
        else:
            coefs = [lr * c / est.q for c in est.projected_grads]
        decay = 1.0 - lr * self.weight_decay
        parts = {n: local_part(p.data) for n, p in params.items()}  # sharded: this rank's rows, at their offset
        names = [n for n, (t, _) in parts.items() if t.numel()]
        with torch.no_grad():  # one fused launch per (dtype, device) for the whole model
            sgd_update_many_(
                [parts[n][0] for n in names],
                [tensor_key(n) for n in names],
                est.seeds,
                coefs,
                decay,
                est.direction,
                backend=self.backend,
                probed=_probed(est, self.probed),
                starts=[parts[n][1] for n in names],
            )
        return UpdateState(state.step + 1, state.buffers)


def _gradient(name: str, p: Tensor, est: ZOEstimate, backend: Backend, probed: bool) -> Tensor:
    """g = (1/q) sum_i c_i u_i (or v_i) for one tensor, float32."""
    coefs = [c / est.q for c in est.projected_grads]
    return combination(
        p, tensor_key(name), est.seeds, coefs, est.direction, backend=backend, probed=_probed(est, probed)
    )


def _write(p: Tensor, y: Tensor, name: str, est: ZOEstimate, backend: Backend) -> None:
    p.copy_(round_to(y, p.dtype, est.seeds[0], tensor_key(name), backend=backend))


@dataclass(frozen=True)
class ZOMomentum:
    """Heavy-ball: m <- beta m + g; theta <- R((1 - lr*wd) theta - lr m).  State: m (float32)."""

    beta: float = 0.9
    weight_decay: float = 0.0
    backend: Backend = "auto"
    probed: bool = True

    def init(self, params: Params) -> UpdateState:
        return _zeros(params, ("m",))

    takes_device_estimates = False  # reads c_i on the host (a skipped step must not move the state)

    def apply(self, params: Params, est: ZOEstimate, lr: float, state: UpdateState) -> UpdateState:
        if est.skipped:
            return state
        with torch.no_grad():
            for name, p in params.items():
                m = state.buffers[name]["m"]
                m.mul_(self.beta).add_(_gradient(name, p, est, self.backend, self.probed))
                if lr:  # lr 0 moves the state only, and theta keeps every bit
                    y = p.data.float().mul_(1.0 - lr * self.weight_decay).sub_(m, alpha=lr)
                    _write(p.data, y, name, est, self.backend)
        return UpdateState(state.step + 1, state.buffers)


@dataclass(frozen=True)
class ZOAdam:
    """AdamW on g: m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    theta <- R((1 - lr*wd) theta - lr m_hat / (sqrt(v_hat) + eps)), hats = bias-corrected.
    State: m, v (float32)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    backend: Backend = "auto"
    probed: bool = True

    def init(self, params: Params) -> UpdateState:
        return _zeros(params, ("m", "v"))

    takes_device_estimates = False  # reads c_i on the host (a skipped step must not move the state)

    def apply(self, params: Params, est: ZOEstimate, lr: float, state: UpdateState) -> UpdateState:
        if est.skipped:
            return state
        t = state.step + 1
        c1, c2 = 1.0 - self.beta1**t, 1.0 - self.beta2**t
        with torch.no_grad():
            for name, p in params.items():
                b, g = state.buffers[name], _gradient(name, p, est, self.backend, self.probed)
                b["m"].mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
                b["v"].mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
                if lr:  # lr 0 moves the moments only, and theta keeps every bit
                    step = (b["m"] / c1).div_((b["v"] / c2).sqrt_().add_(self.eps))
                    y = p.data.float().mul_(1.0 - lr * self.weight_decay).sub_(step, alpha=lr)
                    _write(p.data, y, name, est, self.backend)
        return UpdateState(t, state.buffers)
