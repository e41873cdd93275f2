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

from ..directions import KINDS, LANE_B, lanes
from .draws import _cast, _normals, _normals8, _place, _signs
from .update_tiles import _round_kernel, _update_kernel

GAUSSIAN, RADEMACHER, GAUSSIAN16 = KINDS["gaussian"], KINDS["rademacher"], KINDS["gaussian16"]
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
