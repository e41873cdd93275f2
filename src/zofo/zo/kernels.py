"""Fused Triton kernels: u is generated in registers from (seed, key, index); theta is read once.

* ``perturb``: out = theta + s*u          (one read of theta, one write of the probe copy)
* ``update_``: theta <- SR(d*theta - sum_j a_j u_j)  in place, all q directions in one pass
  (a_j = lr * c_j / q, d = 1 - lr * weight_decay; SR only for bf16 targets)
* ``round_``:  out = SR(x)                 (float32 -> bf16, for the momentum / Adam rules)

Tiles are aligned to the generator: Gaussian tiles are (R, 4) -- one ``tl.randn4x`` per row, lane
j of row r is element 4*(base/4 + r) + j -- and Rademacher tiles are (R, 32) -- one ``tl.randint``
word per row, one sign bit per lane.  The bits are those of ``philox.py`` (tested for equality under
``TRITON_INTERPRET=1``).  With ``fast=True`` (CUDA only) Box-Muller uses the SFU approximations
``__sinf/__cosf`` on [-pi, pi) (|error| < 2e-5 against the exact normals; log stays exact, since near
u = 1 an absolute log error would dominate r): the Gaussian
pass is compute-bound, and the approximation is far below what a ZO direction cares about.

Seeds and scales are read from device tensors, so a probe can be captured in a CUDA graph and
replayed with new values written into them.  Imported lazily: ``zo`` needs triton only on CUDA.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.compiler.errors import CompilationError
from triton.language.extra import libdevice
from triton.language.random import uint_to_uniform_float

GAUSSIAN, RADEMACHER = 0, 1
BLOCK = 4096


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _hash32(x):
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _normals(pseed, counter, FAST: tl.constexpr):
    if FAST:
        i1, i2, i3, i4 = tl.randint4x(pseed, counter)
        u1 = tl.maximum(1.0e-7, uint_to_uniform_float(i1))
        u3 = tl.maximum(1.0e-7, uint_to_uniform_float(i3))
        t2 = 6.283185307179586 * uint_to_uniform_float(i2) - 3.141592653589793
        t4 = 6.283185307179586 * uint_to_uniform_float(i4) - 3.141592653589793
        r1 = -tl.sqrt(tl.maximum(-2.0 * tl.log(u1), 0.0))  # cos(t + pi) = -cos t, sin(t + pi) = -sin t
        r3 = -tl.sqrt(tl.maximum(-2.0 * tl.log(u3), 0.0))
        return (
            r1 * libdevice.fast_cosf(t2),
            r1 * libdevice.fast_sinf(t2),
            r3 * libdevice.fast_cosf(t4),
            r3 * libdevice.fast_sinf(t4),
        )
    else:
        return tl.randn4x(pseed, counter)


@triton.jit
def _tile_offsets(base, R: tl.constexpr, C: tl.constexpr):
    rows = tl.arange(0, R)
    cols = tl.arange(0, C)
    offs = base + rows[:, None].to(tl.int64) * C + cols[None, :]
    return rows, cols, offs


@triton.jit
def _direction(pseed, base, KIND: tl.constexpr, FAST: tl.constexpr, R: tl.constexpr, C: tl.constexpr):
    """u on the (R, C) tile whose first element is ``base`` (a multiple of 32); float32."""
    rows = tl.arange(0, R)
    cols = tl.arange(0, C)
    if KIND == 0:
        n1, n2, n3, n4 = _normals(pseed, base // 4 + rows.to(tl.int64), FAST)
        c = cols[None, :]
        u = tl.where(
            c == 0, n1[:, None], tl.where(c == 1, n2[:, None], tl.where(c == 2, n3[:, None], n4[:, None]))
        )
    else:
        word = tl.randint(pseed, base // 32 + rows.to(tl.int64))
        bit = (word[:, None] >> cols[None, :].to(tl.uint32)) & 1
        u = bit.to(tl.float32) * 2.0 - 1.0
    return u


@triton.jit
def _perturb_kernel(
    x_ptr,
    out_ptr,
    n,
    start,
    key_hi,
    seed_ptr,
    scale_ptr,
    KIND: tl.constexpr,
    HAS_X: tl.constexpr,
    FAST: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
):
    base = (start - start % 32) + tl.program_id(0).to(tl.int64) * (R * C)
    pseed = tl.load(seed_ptr) + key_hi
    _rows, _cols, offs = _tile_offsets(base, R, C)
    u = _direction(pseed, base, KIND, FAST, R, C)
    mask = (offs >= start) & (offs < start + n)
    y = tl.load(scale_ptr) * u
    if HAS_X:
        y = tl.load(x_ptr + (offs - start), mask=mask, other=0.0).to(tl.float32) + y
    tl.store(out_ptr + (offs - start), y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rounding_key(seeds_ptr, key):
    """hash32(seeds[0] ^ hash32(key)), as ``directions.rounding_key``."""
    return _hash32(tl.load(seeds_ptr).to(tl.uint32) ^ _hash32(key.to(tl.uint32)))


@triton.jit
def _stochastic_round_bf16(y, offs, hkey):
    """float32 -> bf16 by adding 16 random bits below the bf16 mantissa and truncating."""
    bits = _hash32(_hash32(offs.to(tl.uint32) ^ hkey) ^ (offs >> 32).to(tl.uint32))
    pattern = y.to(tl.uint32, bitcast=True) + (bits & 0xFFFF)
    rounded = (pattern & 0xFFFF0000).to(tl.float32, bitcast=True)
    return tl.where(y != y, y, rounded).to(tl.bfloat16)


@triton.jit
def _update_kernel(
    x_ptr,
    n,
    start,
    key,
    seeds_ptr,
    coefs_ptr,
    q,
    decay,
    KIND: tl.constexpr,
    FAST: tl.constexpr,
    SR: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
):
    base = (start - start % 32) + tl.program_id(0).to(tl.int64) * (R * C)
    _rows, _cols, offs = _tile_offsets(base, R, C)
    mask = (offs >= start) & (offs < start + n)
    acc = tl.zeros((R, C), dtype=tl.float32)
    key_hi = key.to(tl.int64) << 32
    for j in range(q):
        u = _direction(tl.load(seeds_ptr + j) + key_hi, base, KIND, FAST, R, C)
        acc += tl.load(coefs_ptr + j) * u
    x = tl.load(x_ptr + (offs - start), mask=mask, other=0.0).to(tl.float32)
    y = x * decay - acc
    if SR:
        out = _stochastic_round_bf16(y, offs, _rounding_key(seeds_ptr, key))
    else:
        out = y.to(x_ptr.dtype.element_ty)
    tl.store(x_ptr + (offs - start), out, mask=mask)


@triton.jit
def _round_kernel(x_ptr, out_ptr, n, start, key, seeds_ptr, R: tl.constexpr, C: tl.constexpr):
    base = (start - start % 32) + tl.program_id(0).to(tl.int64) * (R * C)
    _rows, _cols, offs = _tile_offsets(base, R, C)
    mask = (offs >= start) & (offs < start + n)
    y = tl.load(x_ptr + (offs - start), mask=mask, other=0.0).to(tl.float32)
    tl.store(
        out_ptr + (offs - start), _stochastic_round_bf16(y, offs, _rounding_key(seeds_ptr, key)), mask=mask
    )


def _grid(n: int, start: int) -> tuple[int]:
    span = n + start % 32
    return (triton.cdiv(span, BLOCK),)


def _shape(kind: int) -> tuple[int, int]:
    c = 4 if kind == GAUSSIAN else 32
    return BLOCK // c, c


_FAST_OK = [True]  # cleared if this Triton lacks the libdevice fast-math functions


def _fast(x: Tensor, fast: bool | None) -> bool:
    return (x.is_cuda and not interpreting() and _FAST_OK[0]) if fast is None else fast


def _launch(kernel, grid: tuple[int], *args, **kw) -> None:
    """Launch; if the fast-math variant fails to compile, fall back to the exact one for good."""
    try:
        kernel[grid](*args, **kw)
    except CompilationError:
        if not kw.get("FAST"):
            raise
        _FAST_OK[0] = False
        kernel[grid](*args, **{**kw, "FAST": False})


def perturb(
    x: Tensor | None,
    out: Tensor,
    key: int,
    seed: Tensor,
    scale: Tensor,
    kind: int,
    start: int = 0,
    fast: bool | None = None,
) -> Tensor:
    """out = x + scale*u(seed, key) over flat elements [start, start + n); x None gives scale*u.

    ``seed`` (int64) and ``scale`` (float32) are one-element tensors on ``out``'s device.
    """
    r, c = _shape(kind)
    src = out if x is None else x
    _launch(
        _perturb_kernel,
        _grid(out.numel(), start),
        src,
        out,
        out.numel(),
        start,
        key << 32,
        seed,
        scale,
        KIND=kind,
        HAS_X=x is not None,
        FAST=_fast(out, fast),
        R=r,
        C=c,
        num_warps=8,
    )
    return out


def update_(
    x: Tensor,
    key: int,
    seeds: Tensor,
    coefs: Tensor,
    decay: float,
    kind: int,
    start: int = 0,
    fast: bool | None = None,
) -> Tensor:
    """x <- SR(decay*x - sum_j coefs[j] * u(seeds[j], key)) in place; SR (stream of seeds[0]) when x is bf16.

    ``seeds`` (int64) and ``coefs`` (float32) are q-element tensors on x's device.
    """
    r, c = _shape(kind)
    _launch(
        _update_kernel,
        _grid(x.numel(), start),
        x,
        x.numel(),
        start,
        key,
        seeds,
        coefs,
        seeds.numel(),
        decay,
        KIND=kind,
        FAST=_fast(x, fast),
        SR=x.dtype == torch.bfloat16,
        R=r,
        C=c,
        num_warps=8,
    )
    return x


def round_(x: Tensor, out: Tensor, key: int, seed: Tensor, start: int = 0) -> Tensor:
    """out (bf16) = SR(x) with the rounding stream of (seed, key); ``seed`` a one-element int64 tensor."""
    r, c = _shape(RADEMACHER)
    _round_kernel[_grid(x.numel(), start)](x, out, x.numel(), start, key, seed, R=r, C=c, num_warps=8)
    return out
