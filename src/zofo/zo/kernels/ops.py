"""Per-tensor ZO operations, dispatched to the fused Triton kernels (CUDA) or the torch path.

Both paths compute the same function of (theta, seed, key, element index): identical random bits,
Gaussian values equal up to float rounding.  ``backend``: "auto" (kernels on CUDA when triton
imports), "torch", or "triton" (forces kernels, e.g. CPU tensors under ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from zofo.models.device import upload

from ..directions import KINDS, Direction, check_direction, direction_group, direction_like
from ..rounding import LOW_PRECISION, stochastic_round

Backend = Literal["auto", "torch", "triton"]


@dataclass(frozen=True)
class Probed:
    """Update along the directions the probes realised instead of u (for bf16/fp16 theta).

    A probe evaluates the model at R(theta + eps u), R = rounding to theta's dtype; when one ulp of theta
    is near eps (bf16) that point is far from theta + eps u, and c measures the slope along
        v = (R(theta + eps u) - R(theta - eps u)) / (2 eps)    (two-sided)
        v = (R(theta + eps u) - theta) / eps                   (one-sided)
    so the update must move along v, not u.  For float32/64 theta, v = u up to float rounding: u is used.
    """

    eps: float
    two_sided: bool = True

    def mode(self, dtype: torch.dtype) -> int:
        """Kernel flag: 0 = along u, 1 = one-sided v, 2 = two-sided v."""
        return (2 if self.two_sided else 1) if dtype in LOW_PRECISION and self.eps > 0 else 0


def _kernel_probed(probed: Probed | None, dtype: torch.dtype) -> dict[str, float | int]:
    """The update kernels' ``eps`` / ``probed`` arguments for ``probed`` (None: along u)."""
    return {"eps": probed.eps, "probed": probed.mode(dtype)} if probed else {"eps": 0.0, "probed": 0}


@functools.cache
def triton_available() -> bool:
    """Whether the Triton kernels import (triton installed)."""
    try:
        from . import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(t: Tensor, backend: Backend = "auto") -> bool:
    """Whether ``t`` goes through the kernels under ``backend``."""
    if backend == "auto":
        return t.is_cuda and triton_available()
    return backend == "triton"


def _kind(direction: Direction) -> int:
    return KINDS[check_direction(direction)]


def device_scalar(value: int | float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A one-element tensor on ``device`` (what the kernels read seeds and scales from)."""
    return torch.tensor([value], dtype=dtype, device=device)


def perturbed_copy(
    theta: Tensor,
    key: int,
    seed: int | Tensor,
    scale: float | Tensor,
    direction: Direction = "gaussian",
    start: int = 0,
    backend: Backend = "auto",
) -> Tensor:
    """A new tensor theta + scale*u(seed, key) in theta's dtype (computed in float32, float64 for
    float64 theta); theta untouched.

    ``seed`` / ``scale`` may be one-element device tensors (kernel path; CUDA-graph friendly).
    """
    if use_triton(theta, backend):
        from . import triton as kernels

        seed_t = seed if isinstance(seed, Tensor) else device_scalar(seed, torch.int64, theta.device)
        scale_t = scale if isinstance(scale, Tensor) else device_scalar(scale, torch.float32, theta.device)
        out = torch.empty_like(theta, memory_format=torch.contiguous_format)
        return kernels.perturb(theta.contiguous(), out, key, seed_t, scale_t, _kind(direction), start)
    seed, scale = _as_int(seed), _as_float(scale)
    u = direction_like(theta, seed, key, direction, start)
    wide = torch.float64 if theta.dtype == torch.float64 else torch.float32
    s = torch.tensor(scale, dtype=torch.float32, device=theta.device).to(wide)
    return (theta.to(wide) + s * u.to(wide)).to(theta.dtype)


def perturbed_copies(
    thetas: Sequence[Tensor],
    keys: Sequence[int],
    seed: int | Tensor,
    scale: float | Tensor,
    direction: Direction = "gaussian",
    backend: Backend = "auto",
) -> list[Tensor]:
    """``perturbed_copy`` of several tensors with as few launches as possible: on the kernel path one
    launch per (dtype, device) cluster (``multi.perturb_group``), on the torch path one batched Philox
    evaluation.  Same values as per-tensor calls, bit for bit."""
    out: list[Tensor | None] = [None] * len(thetas)
    for idx in _clusters(thetas, lambda t: use_triton(t, backend) and t.is_contiguous()):
        ts, ks = [thetas[i] for i in idx], [keys[i] for i in idx]
        if use_triton(ts[0], backend) and ts[0].is_contiguous():
            from .. import multi

            seed_t = seed if isinstance(seed, Tensor) else device_scalar(seed, torch.int64, ts[0].device)
            scale_t = (
                scale if isinstance(scale, Tensor) else device_scalar(scale, torch.float32, ts[0].device)
            )
            res = multi.perturb_group(ts, ks, seed_t, scale_t, _kind(direction))
        else:
            res = _torch_copies(ts, ks, _as_int(seed), _as_float(scale), direction)
        for i, r in zip(idx, res, strict=True):
            out[i] = r
    return out  # type: ignore[return-value]


def _clusters(ts: Sequence[Tensor], kernel_ok) -> list[list[int]]:
    """Indices of ``ts`` grouped by (device, dtype, path); kernel clusters also need aligned pointers."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(ts):
        ok = kernel_ok(t) and (t.data_ptr() % t.element_size() == 0)
        groups.setdefault((t.device, t.dtype, ok), []).append(i)
    return list(groups.values())


def _torch_copies(
    ts: Sequence[Tensor], keys: Sequence[int], seed: int, scale: float, direction
) -> list[Tensor]:
    us = direction_group(seed, list(keys), [t.numel() for t in ts], direction, ts[0].device)
    wide = torch.float64 if ts[0].dtype == torch.float64 else torch.float32
    s = torch.tensor(scale, dtype=torch.float32, device=ts[0].device).to(wide)
    return [(s * u.view(t.shape).to(wide)).add_(t.to(wide)).to(t.dtype) for t, u in zip(ts, us, strict=True)]


def _as_int(v: int | Tensor) -> int:
    return int(v.item()) if isinstance(v, Tensor) else int(v)


def _as_float(v: float | Tensor) -> float:
    return float(v.item()) if isinstance(v, Tensor) else float(v)


def combination(
    like: Tensor,
    key: int,
    seeds: Sequence[int],
    coefs: Sequence[float],
    direction: Direction = "gaussian",
    start: int = 0,
    backend: Backend = "auto",
    probed: Probed | None = None,
) -> Tensor:
    """g = sum_j coefs[j] * u(seeds[j], key) as a float32 tensor shaped like ``like``; with ``probed``,
    ``like`` is theta and v (``probed_direction``) replaces u."""
    if probed is not None and probed.mode(like.dtype):
        if direction == "rademacher" and probed.two_sided:
            return _signed_sum(like, key, seeds, coefs, start) * _rademacher_probed(like, probed)
        g = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
        for seed, coef in zip(seeds, coefs, strict=True):
            g.add_(probed_direction(like, key, seed, probed, direction, start, backend), alpha=coef)
        return g
    if use_triton(like, backend):
        g = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
        neg = [-c for c in coefs]
        return _update_kernel_call(g, key, seeds, neg, 1.0, direction, start)
    g = torch.zeros(like.shape, dtype=torch.promote_types(like.dtype, torch.float32), device=like.device)
    for seed, coef in zip(seeds, coefs, strict=True):
        g.add_(direction_like(like, seed, key, direction, start), alpha=coef)
    return g


def _signed_sum(like: Tensor, key: int, seeds: Sequence[int], coefs: Sequence[float], start: int) -> Tensor:
    """sum_j (+c_j where u_j = +1 else -c_j) in float32, in the order the update kernel adds them."""
    cs = torch.tensor(list(coefs), dtype=torch.float32, device=like.device)
    s = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    for j, seed in enumerate(seeds):
        s += torch.where(direction_like(like, seed, key, "rademacher", start) > 0, cs[j], -cs[j])
    return s


def _rademacher_probed(theta: Tensor, probed: Probed) -> Tensor:
    """Two-sided v of the direction u = +1 everywhere (``Probed``); u = -1 gives exactly -v."""
    eps = torch.tensor(probed.eps, dtype=torch.float32, device=theta.device)
    x = theta.float()
    return ((x + eps).to(theta.dtype).float() - (x - eps).to(theta.dtype).float()) * (0.5 / eps)


def probed_direction(
    theta: Tensor,
    key: int,
    seed: int,
    probed: Probed,
    direction: Direction = "gaussian",
    start: int = 0,
    backend: Backend = "auto",
) -> Tensor:
    """v of ``Probed`` (float32), from the very perturbed copies the probes evaluated; the 1 / (2 eps) is
    rounded to float32 as the fused update kernel rounds it."""
    eps = torch.tensor(probed.eps, dtype=torch.float32)
    plus = perturbed_copy(theta, key, seed, probed.eps, direction, start, backend).float()
    if probed.two_sided:
        minus = perturbed_copy(theta, key, seed, -probed.eps, direction, start, backend).float()
        return (plus - minus) * (0.5 / eps).to(theta.device)
    return (plus - theta.float()) * (1.0 / eps).to(theta.device)


def _update_kernel_call(
    x: Tensor,
    key: int,
    seeds: Sequence[int] | Tensor,
    coefs: Sequence[float] | Tensor,
    decay: float,
    direction: Direction,
    start: int,
    probed: Probed | None = None,
) -> Tensor:
    from . import triton as kernels

    seeds_t = _on(seeds, torch.int64, x.device)
    coefs_t = _on(coefs, torch.float32, x.device)
    return kernels.update_(x, key, seeds_t, coefs_t, decay, _kind(direction), start, **_kernel_probed(probed, x.dtype))


def _on(values: Sequence[int] | Sequence[float] | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`values` on `device` without waiting for it (`transfer.upload`)."""
    if isinstance(values, Tensor):
        return values.to(device=device, dtype=dtype)
    return upload(torch.tensor(list(values), dtype=dtype), device)


def _as_list(values: Sequence[int] | Sequence[float] | Tensor) -> list:
    return values.tolist() if isinstance(values, Tensor) else list(values)


def sgd_update_(
    theta: Tensor,
    key: int,
    seeds: Sequence[int] | Tensor,
    coefs: Sequence[float] | Tensor,
    decay: float = 1.0,
    direction: Direction = "gaussian",
    start: int = 0,
    backend: Backend = "auto",
    probed: Probed | None = None,
) -> Tensor:
    """In place: theta <- R(decay*theta - sum_j coefs[j] u_j), R = stochastic rounding for bf16/fp16
    (``probed``: v_j of ``Probed`` in place of u_j).

    Computed in float32; the rounding stream is keyed by (seeds[0], key).  ``seeds`` / ``coefs`` may be
    device tensors (made once per step, not per tensor: no host->device copy per parameter).
    """
    fp16 = theta.dtype == torch.float16
    if use_triton(theta, backend) and theta.is_contiguous() and not fp16:
        return _update_kernel_call(theta, key, seeds, coefs, decay, direction, start, probed)
    seeds, coefs = _as_list(seeds), _as_list(coefs)
    g = combination(theta, key, seeds, coefs, direction, start, backend="torch", probed=probed)
    y = theta.to(torch.promote_types(theta.dtype, torch.float32)) * decay - g
    theta.copy_(stochastic_round(y, theta.dtype, seeds[0], key, start))
    return theta


def sgd_update_many_(
    thetas: Sequence[Tensor],
    keys: Sequence[int],
    seeds: Sequence[int],
    coefs: Sequence[float] | Tensor,
    decay: float = 1.0,
    direction: Direction = "gaussian",
    backend: Backend = "auto",
    probed: Probed | None = None,
    starts: Sequence[int] | None = None,
) -> None:
    """``sgd_update_`` of several tensors: one launch per (dtype, device) cluster on the kernel path
    (``multi.update_group_``; seeds/coefs copied to each device once, without a host sync), per tensor
    elsewhere. ``coefs`` may be a device tensor (a `DeviceEstimate`'s), read by the kernel where it is.
    ``starts``: each tensor's first element's flat index in its whole tensor (a shard's offset; default 0)."""
    starts = list(starts) if starts is not None else [0] * len(thetas)

    def kernel_ok(t: Tensor) -> bool:
        return use_triton(t, backend) and t.is_contiguous() and t.dtype != torch.float16

    for idx in _clusters(thetas, kernel_ok):
        ts, ks, ss = [thetas[i] for i in idx], [keys[i] for i in idx], [starts[i] for i in idx]
        if kernel_ok(ts[0]):
            from .. import multi

            dev = ts[0].device
            seeds_t, coefs_t = _on(seeds, torch.int64, dev), _on(coefs, torch.float32, dev)
            flags = _kernel_probed(probed, ts[0].dtype)
            multi.update_group_(ts, ks, seeds_t, coefs_t, decay, _kind(direction), starts=ss, **flags)
        else:
            for t, k, s in zip(ts, ks, ss, strict=True):
                sgd_update_(t, k, seeds, coefs, decay, direction, start=s, backend=backend, probed=probed)


def round_to(
    x: Tensor, dtype: torch.dtype, seed: int | Tensor, key: int, start: int = 0, backend: Backend = "auto"
) -> Tensor:
    """Stochastically round float32 ``x`` to ``dtype`` with the stream of (seed, key).

    ``seed`` may be a one-element int64 device tensor (kernel path; CUDA-graph friendly).
    """
    if dtype == torch.bfloat16 and use_triton(x, backend):
        from . import triton as kernels

        x = x.float().contiguous()
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
        seed_t = seed if isinstance(seed, Tensor) else device_scalar(seed, torch.int64, x.device)
        return kernels.round_(x, out, key, seed_t, start)
    return stochastic_round(x, dtype, _as_int(seed), key, start)
