"""Fused Triton kernels: u is generated in registers from (seed, key, index); theta is read once.

* ``perturb``: out = theta + s*u          (one read of theta, one write of the probe copy)
* ``update_``: theta <- SR(d*theta - sum_j a_j u_j)  in place, all q directions in one pass
  (a_j = lr * c_j / q, d = 1 - lr * weight_decay; SR only for bf16 targets; u_j may be replaced by the
  direction the probes realised, ``ops.Probed``, recomputed from theta in registers)
* ``round_``:  out = SR(x)                 (float32 -> bf16, for the momentum / Adam rules)
* ``multi.py`` launches the same tile code over a group of tensors (one launch per decoder layer).

Layout (see ``directions``): elements come in super-blocks of L*LANE_B (L = 4 normals per Philox call,
8 for ``gaussian16``, or 32 sign bits per word); lane j of counter i lives at j*LANE_B + i.  A program takes
R consecutive counters of one super-block and writes each lane as a contiguous R-wide row, so loads and stores are
plain coalesced vectors with int32 offsets from one int64 scalar base, the normals need no select, and
masks are evaluated only in super-blocks that cross the tensor's ends.  R (and the warps) are free:
the bits do not depend on them.  With ``fast=True`` (CUDA only) Box-Muller uses ``__log2f`` (with a series
near u1 = 1) and ``__sinf/__cosf`` on [-pi, pi) (|error| < 2e-5): the Gaussian pass is compute-bound.

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

from ..directions import KINDS, LANE_B, lanes

GAUSSIAN, RADEMACHER, GAUSSIAN16 = KINDS["gaussian"], KINDS["rademacher"], KINDS["gaussian16"]
# The interpreter truncates float32 -> bf16 where CUDA rounds to nearest even: there it is written out.
_RTNE_BY_HAND = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")
# Counters per program and warps per kind: fastest of the sweep on the H200 (benchmarks/zo_step.py,
# 2026-11-29; Gaussian 1024x4 gives 16-byte loads, 8 elements a thread).
TILE = {GAUSSIAN: (1024, 4), RADEMACHER: (256, 4), GAUSSIAN16: (512, 4)}  # GAUSSIAN16: not swept yet
# A probe's grouped launches (`multi.perturb_group`, one decoder layer each) have tiles of their own. Gaussian
# favours shorter programs: OPT-1.3B's 24 layers in a CUDA graph, 2.08 ms at 512x4 against 2.35 at 1024x4 (run 52).
# Rademacher favours longer ones: 1.43 ms at 512x4 against 1.66 at 256x4 (run 57, 2026-12-03), the reverse of the
# flat pass (1.75 against 1.37). Why is not known: compiled, the two differ only by the grouped kernel's row lookup
# (same registers, same spills), and at these tiles many tensors in one launch cost no more than one (within 0.08
# ms). docs/ZO_ENGINE.md has the sweep.
GROUP_TILE = {**TILE, GAUSSIAN: (512, 4), RADEMACHER: (512, 4)}
# Whether perturbed copies stream through L2 marked evict-first, on load (theta) and store (the copy). A probe
# writes a layer's copy (~100 MB for OPT-1.3B, more than the H200's L2) just before that layer's matrix products,
# which ran 6% slower in the ZO step than in a plain forward (run 42); the hint would keep the copy from pushing
# their activations out of L2. Off: measured on OPT-1.3B it moved the step by -0.38 to +0.12 ms, inside the
# spread between runs (runs 53 and 55, `benchmarks/zo_step.py --evict-first`); values are the same either way.
# Read at each launch.
EVICT_FIRST = False
ROUND_BLOCK = 4096


def tile_spec(spec: str) -> tuple[int, tuple[int, int]]:
    """``KIND=R,W`` (e.g. ``rademacher=512,4``) -> (kind, (R counters per program, W warps)), checked: R a power of
    two from 64 to 1024, W one from 1 to 16; a `ValueError` says what is expected."""
    kind, _, tile = spec.partition("=")
    try:
        r, w = (int(v) for v in tile.split(","))
    except ValueError:
        raise ValueError("expected KIND=R,W, e.g. rademacher=512,8") from None
    if kind not in KINDS or r not in (64, 128, 256, 512, 1024) or w not in (1, 2, 4, 8, 16):
        raise ValueError(f"KIND one of {sorted(KINDS)}, R in 64..1024 (a power of two), W in 1..16 (a power of two)")
    return KINDS[kind], (r, w)


def eviction_policy() -> str:
    """The L2 eviction policy a perturbation launch gives its streams now (`EVICT_FIRST`)."""
    return "evict_first" if EVICT_FIRST else ""


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
def _neg_log(u1, FAST: tl.constexpr):
    """-ln u1 for u1 in (0, 1); with FAST from ``__log2f``, but from the series of -ln(1 - w) where w = 1 - u1
    < 1/32, since there ``__log2f``'s absolute error (~2^-22) is not small beside the result."""
    if FAST:
        w = 1.0 - u1  # exact for u1 >= 1/2
        tail = w * (1.0 + w * (0.5 + w * (0.3333333333333333 + w * (0.25 + w * 0.2))))  # error < w^6/6
        return tl.where(w < 0.03125, tail, -0.6931471805599453 * libdevice.fast_log2f(u1))
    else:
        return -tl.log(u1)


@triton.jit
def _box_muller(u1, u2, FAST: tl.constexpr):
    """(r cos 2 pi u2, r sin 2 pi u2), r = sqrt(-2 ln u1); with FAST, ``__cosf/__sinf`` on [-pi, pi)."""
    r = tl.sqrt(tl.maximum(2.0 * _neg_log(u1, FAST), 0.0))
    if FAST:
        t = 6.283185307179586 * u2 - 3.141592653589793  # cos(t + pi) = -cos t, sin(t + pi) = -sin t
        return -r * libdevice.fast_cosf(t), -r * libdevice.fast_sinf(t)
    else:
        t = 6.283185307179586 * u2
        return r * tl.cos(t), r * tl.sin(t)


@triton.jit
def _normals(pseed, counter, FAST: tl.constexpr):
    if FAST:
        i1, i2, i3, i4 = tl.randint4x(pseed, counter)
        n1, n2 = _box_muller(tl.maximum(1.0e-7, uint_to_uniform_float(i1)), uint_to_uniform_float(i2), FAST)
        n3, n4 = _box_muller(tl.maximum(1.0e-7, uint_to_uniform_float(i3)), uint_to_uniform_float(i4), FAST)
        return n1, n2, n3, n4
    else:
        return tl.randn4x(pseed, counter)


@triton.jit
def _pair(word, FAST: tl.constexpr):
    """Box-Muller on the 16-bit halves of one Philox word (``philox.randn8x``)."""
    # (h + 1/2) / 2**16 without an int -> float conversion: h as the top mantissa bits of a float in [1, 2),
    # minus (1 - 2**-17); exact, as the subtraction's result has at most 17 significant bits
    u1 = (((word & 0xFFFF) << 7) | 0x3F800000).to(tl.float32, bitcast=True) - 0.99999237060546875
    u2 = (((word >> 16) << 7) | 0x3F800000).to(tl.float32, bitcast=True) - 0.99999237060546875
    return _box_muller(u1, u2, FAST)


@triton.jit
def _normals8(pseed, counter, FAST: tl.constexpr):
    """Eight normals per counter from one Philox call (the ``gaussian16`` kind)."""
    i1, i2, i3, i4 = tl.randint4x(pseed, counter)
    n1, n2 = _pair(i1, FAST)
    n3, n4 = _pair(i2, FAST)
    n5, n6 = _pair(i3, FAST)
    n7, n8 = _pair(i4, FAST)
    return n1, n2, n3, n4, n5, n6, n7, n8


@triton.jit
def _bits(pseed, counter):
    """(32, R) tile of 0/1: row j = bit j of the Philox word of each counter (u = +1 where 1)."""
    word = tl.randint(pseed, counter)
    return (word[None, :] >> tl.arange(0, 32)[:, None].to(tl.uint32)) & 1


@triton.jit
def _signs(pseed, counter):
    """(32, R) tile of +-1 (``_bits`` mapped to -1 / +1)."""
    return _bits(pseed, counter).to(tl.float32) * 2.0 - 1.0


@triton.jit
def _place(lp, n, start, KIND: tl.constexpr, R: tl.constexpr, ALIGN: tl.constexpr):
    """Program ``lp`` of a tensor holding flat elements [start, start+n): its counters' first global
    element ``e0`` (int64), that element's offset from the tensor's first (``off``), and whether the
    whole super-block lies inside the tensor (``full``: no masks)."""
    SBN: tl.constexpr = (4 if KIND == 0 else (32 if KIND == 1 else 8)) * 1024
    P: tl.constexpr = 1024 // R
    lp = lp.to(tl.int64)
    sb = start // SBN + lp // P
    e0 = sb * SBN + (lp % P) * R
    off = tl.multiple_of(e0 - start, ALIGN)
    full = (sb * SBN >= start) & (sb * SBN + SBN - start <= n)
    counter = sb * 1024 + (lp % P) * R + tl.arange(0, R).to(tl.int64)
    return e0, off, full, counter


@triton.jit
def _cast(y, dtype: tl.constexpr):
    """float32 -> ``dtype``, round to nearest even (as torch; by hand for bf16 in the interpreter)."""
    if _RTNE_BY_HAND and dtype == tl.bfloat16:
        bits = y.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return tl.where(y != y, y, bits.to(tl.float32, bitcast=True)).to(tl.bfloat16)
    return y.to(dtype)


@triton.jit
def _emit(xb, ob, local, u, scale, lo, hi, full, HAS_X: tl.constexpr, EVICTION: tl.constexpr):
    """ob[local] = xb[local] + scale*u; masked to lo <= local < hi unless ``full``; ``EVICTION``: the L2 eviction
    policy of both streams ("" or "evict_first": `eviction_policy`)."""
    if full:
        y = scale * u
        if HAS_X:
            y += tl.load(xb + local, eviction_policy=EVICTION).to(tl.float32)
        tl.store(ob + local, _cast(y, ob.dtype.element_ty), eviction_policy=EVICTION)
    else:
        m = (local >= lo) & (local < hi)
        y = scale * u
        if HAS_X:
            y += tl.load(xb + local, mask=m, other=0.0, eviction_policy=EVICTION).to(tl.float32)
        tl.store(ob + local, _cast(y, ob.dtype.element_ty), mask=m, eviction_policy=EVICTION)


@triton.jit
def perturb_tile(
    x_ptr,
    out_ptr,
    lp,
    n,
    start,
    pseed,
    scale,
    KIND: tl.constexpr,
    HAS_X: tl.constexpr,
    FAST: tl.constexpr,
    R: tl.constexpr,
    ALIGN: tl.constexpr,
    EVICTION: tl.constexpr,
):
    """out = x + scale*u over program ``lp``'s tile (x_ptr/out_ptr point at the tensor's first element)."""
    e0, off, full, counter = _place(lp, n, start, KIND, R, ALIGN)
    xb, ob = x_ptr + off, out_ptr + off
    lo, hi = -off, n - off
    i = tl.arange(0, R)
    if KIND == 0:
        n1, n2, n3, n4 = _normals(pseed, counter, FAST)
        _emit(xb, ob, i, n1, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 1024, n2, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 2048, n3, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 3072, n4, scale, lo, hi, full, HAS_X, EVICTION)
    elif KIND == 2:
        n1, n2, n3, n4, n5, n6, n7, n8 = _normals8(pseed, counter, FAST)
        _emit(xb, ob, i, n1, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 1024, n2, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 2048, n3, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 3072, n4, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 4096, n5, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 5120, n6, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 6144, n7, scale, lo, hi, full, HAS_X, EVICTION)
        _emit(xb, ob, i + 7168, n8, scale, lo, hi, full, HAS_X, EVICTION)
    else:
        local = tl.arange(0, 32)[:, None] * 1024 + i[None, :]
        _emit(xb, ob, local, _signs(pseed, counter), scale, lo, hi, full, HAS_X, EVICTION)


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
    ALIGN: tl.constexpr,
    EVICTION: tl.constexpr,
):
    pseed = tl.load(seed_ptr) + key_hi
    perturb_tile(
        x_ptr, out_ptr, tl.program_id(0), n, start, pseed, tl.load(scale_ptr), KIND, HAS_X, FAST, R, ALIGN, EVICTION
    )


@triton.jit
def _rounding_key(seeds_ptr, key):
    """hash32(seeds[0] ^ hash32(key)), as ``directions.rounding_key``."""
    return _hash32(tl.load(seeds_ptr).to(tl.uint32) ^ _hash32(key.to(tl.uint32)))


@triton.jit
def _stochastic_round_bf16(y, lo, hi, hkey):
    """float32 -> bf16 by adding 16 random bits (of element index hi:lo) below the mantissa, truncating."""
    bits = _hash32(_hash32(lo ^ hkey) ^ hi)
    pattern = y.to(tl.uint32, bitcast=True) + (bits & 0xFFFF)
    rounded = (pattern & 0xFFFF0000).to(tl.float32, bitcast=True)
    return tl.where(y != y, y, rounded).to(tl.bfloat16)


@triton.jit
def _load(xb, local, lo, hi, full):
    """xb[local] as float32 (masked to lo <= local < hi unless ``full``)."""
    if full:
        x = tl.load(xb + local)
    else:
        x = tl.load(xb + local, mask=(local >= lo) & (local < hi), other=0.0)
    return x.to(tl.float32)


@triton.jit
def _as_probed(x, u, eps, PROBED: tl.constexpr, dtype: tl.constexpr):
    """The direction the probes realised (``ops.Probed``): R(x + eps u) computed as the probe kernel does."""
    if PROBED == 0:
        return u
    plus = _cast(eps * u + x, dtype).to(tl.float32)
    if PROBED == 2:
        minus = _cast((-eps) * u + x, dtype).to(tl.float32)
        return (plus - minus) * (0.5 / eps)
    return (plus - x) * (1.0 / eps)


@triton.jit
def _commit(xb, local, x, acc, decay, e0, hkey, lo, hi, full, SR: tl.constexpr):
    """xb[local] <- R(decay*x - acc), x = xb[local] as loaded; element index of ``local`` is e0 + local."""
    y = x * decay - acc
    if SR:  # a super-block never crosses 2**32, so the index's high word is e0's
        e_lo = (e0 & 0xFFFFFFFF).to(tl.uint32) + local.to(tl.uint32)
        out = _stochastic_round_bf16(y, e_lo, (e0 >> 32).to(tl.uint32), hkey)
    else:
        out = y.to(xb.dtype.element_ty)
    if full:
        tl.store(xb + local, out)
    else:
        tl.store(xb + local, out, mask=(local >= lo) & (local < hi))


@triton.jit
def _load4(xb, base, lo, hi, full):
    """Four lane rows (LANE_B apart) from ``base``, as float32."""
    return (_load(xb, base, lo, hi, full), _load(xb, base + 1024, lo, hi, full),
            _load(xb, base + 2048, lo, hi, full), _load(xb, base + 3072, lo, hi, full))


@triton.jit
def _accumulate4(a1, a2, a3, a4, x1, x2, x3, x4, n1, n2, n3, n4, c, eps, PROBED: tl.constexpr, dtype: tl.constexpr):
    """a_k += c * (the direction of lane k): u, or the direction its probes realised."""
    return (a1 + c * _as_probed(x1, n1, eps, PROBED, dtype), a2 + c * _as_probed(x2, n2, eps, PROBED, dtype),
            a3 + c * _as_probed(x3, n3, eps, PROBED, dtype), a4 + c * _as_probed(x4, n4, eps, PROBED, dtype))


@triton.jit
def _commit4(xb, base, x1, x2, x3, x4, a1, a2, a3, a4, decay, e0, hkey, lo, hi, full, SR: tl.constexpr):
    """``_commit`` of four lane rows (LANE_B apart) from ``base``."""
    _commit(xb, base, x1, a1, decay, e0, hkey, lo, hi, full, SR)
    _commit(xb, base + 1024, x2, a2, decay, e0, hkey, lo, hi, full, SR)
    _commit(xb, base + 2048, x3, a3, decay, e0, hkey, lo, hi, full, SR)
    _commit(xb, base + 3072, x4, a4, decay, e0, hkey, lo, hi, full, SR)


@triton.jit
def update_tile(
    x_ptr,
    lp,
    n,
    start,
    key,
    seeds_ptr,
    coefs_ptr,
    q,
    decay,
    eps,
    KIND: tl.constexpr,
    FAST: tl.constexpr,
    SR: tl.constexpr,
    PROBED: tl.constexpr,
    R: tl.constexpr,
    ALIGN: tl.constexpr,
):
    """x <- R(decay*x - sum_j coefs[j] u_j) over program ``lp``'s tile, in place (u_j -> v_j if PROBED)."""
    e0, off, full, counter = _place(lp, n, start, KIND, R, ALIGN)
    xb = x_ptr + off
    dtype = xb.dtype.element_ty
    lo, hi = -off, n - off
    key_hi = key.to(tl.int64) << 32
    hkey = _rounding_key(seeds_ptr, key)
    i = tl.arange(0, R)
    if KIND == 0:
        x1, x2, x3, x4 = _load4(xb, i, lo, hi, full)
        a1 = tl.zeros((R,), dtype=tl.float32)
        a2, a3, a4 = a1, a1, a1
        for j in range(q):
            c = tl.load(coefs_ptr + j)
            n1, n2, n3, n4 = _normals(tl.load(seeds_ptr + j) + key_hi, counter, FAST)
            a1, a2, a3, a4 = _accumulate4(a1, a2, a3, a4, x1, x2, x3, x4, n1, n2, n3, n4, c, eps, PROBED, dtype)
        _commit4(xb, i, x1, x2, x3, x4, a1, a2, a3, a4, decay, e0, hkey, lo, hi, full, SR)
    elif KIND == 2:
        x1, x2, x3, x4 = _load4(xb, i, lo, hi, full)
        x5, x6, x7, x8 = _load4(xb, i + 4096, lo, hi, full)
        a1 = tl.zeros((R,), dtype=tl.float32)
        a2, a3, a4, a5, a6, a7, a8 = a1, a1, a1, a1, a1, a1, a1
        for j in range(q):
            c = tl.load(coefs_ptr + j)
            n1, n2, n3, n4, n5, n6, n7, n8 = _normals8(tl.load(seeds_ptr + j) + key_hi, counter, FAST)
            a1, a2, a3, a4 = _accumulate4(a1, a2, a3, a4, x1, x2, x3, x4, n1, n2, n3, n4, c, eps, PROBED, dtype)
            a5, a6, a7, a8 = _accumulate4(a5, a6, a7, a8, x5, x6, x7, x8, n5, n6, n7, n8, c, eps, PROBED, dtype)
        _commit4(xb, i, x1, x2, x3, x4, a1, a2, a3, a4, decay, e0, hkey, lo, hi, full, SR)
        _commit4(xb, i + 4096, x5, x6, x7, x8, a5, a6, a7, a8, decay, e0, hkey, lo, hi, full, SR)
    else:
        local = tl.arange(0, 32)[:, None] * 1024 + i[None, :]
        x = _load(xb, local, lo, hi, full)
        acc = tl.zeros((32, R), dtype=tl.float32)
        if PROBED == 1:
            for j in range(q):
                signs = _signs(tl.load(seeds_ptr + j) + key_hi, counter)
                acc += tl.load(coefs_ptr + j) * _as_probed(x, signs, eps, PROBED, dtype)
        else:  # u_j = +-1 and two-sided v(-1) = -v(+1) exactly: sum_j c_j v_j = (sum_j +-c_j) v(+1)
            for j in range(q):
                c = tl.load(coefs_ptr + j)
                acc += tl.where(_bits(tl.load(seeds_ptr + j) + key_hi, counter) != 0, c, -c)
            if PROBED == 2:
                acc = acc * _as_probed(x, 1.0, eps, PROBED, dtype)
        _commit(xb, local, x, acc, decay, e0, hkey, lo, hi, full, SR)


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
    eps,
    KIND: tl.constexpr,
    FAST: tl.constexpr,
    SR: tl.constexpr,
    PROBED: tl.constexpr,
    R: tl.constexpr,
    ALIGN: tl.constexpr,
):
    update_tile(
        x_ptr, tl.program_id(0), n, start, key, seeds_ptr, coefs_ptr, q, decay, eps, KIND, FAST, SR, PROBED, R,
        ALIGN,
    )


@triton.jit
def _round_kernel(x_ptr, out_ptr, n, start, key, seeds_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    e = offs + start
    y = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    out = _stochastic_round_bf16(y, e.to(tl.uint32), (e >> 32).to(tl.uint32), _rounding_key(seeds_ptr, key))
    tl.store(out_ptr + offs, out, mask=mask)


def programs(n: int, start: int, kind: int, r: int) -> int:
    """Programs that cover flat elements [start, start+n) with tiles of r counters."""
    if n == 0:
        return 0
    sbn = lanes(kind) * LANE_B
    return ((start + n - 1) // sbn - start // sbn + 1) * (LANE_B // r)


def align(elem_size: int, *offsets: int) -> int:
    """Largest hint (elements, up to 16 bytes' worth) that divides every offset."""
    a = max(1, 16 // elem_size)
    while a > 1 and any(o % a for o in offsets):
        a //= 2
    return a


_FAST_OK = [True]  # cleared if this Triton lacks the libdevice fast-math functions


def fast_default(x: Tensor, fast: bool | None) -> bool:
    """The ``fast`` flag a launch on ``x`` uses."""
    return (x.is_cuda and not interpreting() and _FAST_OK[0]) if fast is None else fast


def launch(kernel, grid: tuple[int], *args, **kw) -> None:
    """Launch; if the fast-math variant fails to compile, fall back to the exact one for good."""
    if grid[0] == 0:
        return
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
    tile: tuple[int, int] | None = None,
) -> Tensor:
    """out = x + scale*u(seed, key) over flat elements [start, start + n); x None gives scale*u.

    ``seed`` (int64) and ``scale`` (float32) are one-element tensors on ``out``'s device; ``tile``
    = (counters per program, warps) overrides ``TILE`` (benchmarks).
    """
    r, warps = tile or TILE[kind]
    n = out.numel()
    launch(
        _perturb_kernel,
        (programs(n, start, kind, r),),
        out if x is None else x,
        out,
        n,
        start,
        key << 32,
        seed,
        scale,
        KIND=kind,
        HAS_X=x is not None,
        FAST=fast_default(out, fast),
        R=r,
        ALIGN=align(out.element_size(), start),
        EVICTION=eviction_policy(),
        num_warps=warps,
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
    tile: tuple[int, int] | None = None,
    eps: float = 0.0,
    probed: int = 0,
) -> Tensor:
    """x <- SR(decay*x - sum_j coefs[j] * u(seeds[j], key)) in place; SR (stream of seeds[0]) when x is bf16.

    ``seeds`` (int64) and ``coefs`` (float32) are q-element tensors on x's device; ``probed`` (1 one-sided,
    2 two-sided) replaces u by the direction realised by probes at +-eps (``ops.Probed``).
    """
    r, warps = tile or TILE[kind]
    n = x.numel()
    launch(
        _update_kernel,
        (programs(n, start, kind, r),),
        x,
        n,
        start,
        key,
        seeds,
        coefs,
        seeds.numel(),
        decay,
        eps,
        KIND=kind,
        FAST=fast_default(x, fast),
        SR=x.dtype == torch.bfloat16,
        PROBED=probed,
        R=r,
        ALIGN=align(x.element_size(), start),
        num_warps=warps,
    )
    return x


def round_(x: Tensor, out: Tensor, key: int, seed: Tensor, start: int = 0) -> Tensor:
    """out (bf16) = SR(x) with the rounding stream of (seed, key); ``seed`` a one-element int64 tensor."""
    grid = (triton.cdiv(x.numel(), ROUND_BLOCK),)
    _round_kernel[grid](x, out, x.numel(), start, key, seed, BLOCK=ROUND_BLOCK, num_warps=8)
    return out
