"""Multi-tensor launches: perturb or update a whole group of tensors (a decoder layer) in ONE launch.

Small models are launch-bound: a probe of SmolLM2-135M is 30 layers x 9 tensors = 270 launches of a
few microseconds of work each.  Here one launch covers a group: a small int64 table holds, per tensor,
(input offset from the first tensor, output offset in one flat buffer, numel, shard start, key, first
program); each program finds its row by counting the table's first-program column, then runs the same
tile code as the per-tensor kernels (same bits, same layout).  Inputs are addressed relative to the
first tensor's pointer (one flat device address space), so no copy of theta is made.  Tables depend
only on (pointers, sizes, keys, tile) and are cached on the device: a probe makes no host->device copy,
and can be captured in a CUDA graph once the cache is warm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from zofo.models.device import upload

from .kernels import triton as K
from .kernels.update_tiles import update_tile

_COLS = 6  # in_delta, out_offset, n, start, key, first program
_PAD = 64  # output offsets rounded up to this many elements (keeps 16-byte alignment)
_FAR = 1 << 62
_TABLES: dict[tuple, tuple[Tensor, int, int]] = {}
_MAX_TABLES = 4096


@triton.jit
def _row(meta_ptr, NT: tl.constexpr, ALIGN: tl.constexpr):
    """This program's tensor row: (in_delta, out_offset, n, start, key, program within the tensor)."""
    pid = tl.program_id(0).to(tl.int64)
    firsts = tl.load(meta_ptr + tl.arange(0, NT) * 6 + 5)
    row = meta_ptr + (tl.sum((firsts <= pid).to(tl.int32)) - 1) * 6
    in_d = tl.multiple_of(tl.load(row), ALIGN)
    out_d = tl.multiple_of(tl.load(row + 1), ALIGN)
    return in_d, out_d, tl.load(row + 2), tl.load(row + 3), tl.load(row + 4), pid - tl.load(row + 5)


@triton.jit
def _multi_perturb_kernel(
    x_ptr,
    out_ptr,
    meta_ptr,
    seed_ptr,
    scale_ptr,
    NT: tl.constexpr,
    KIND: tl.constexpr,
    FAST: tl.constexpr,
    R: tl.constexpr,
    ALIGN: tl.constexpr,
    EVICTION: tl.constexpr,
):
    in_d, out_d, n, start, key, lp = _row(meta_ptr, NT, ALIGN)
    pseed = tl.load(seed_ptr) + (key << 32)
    K.perturb_tile(
        x_ptr + in_d, out_ptr + out_d, lp, n, start, pseed, tl.load(scale_ptr), KIND, True, FAST, R, ALIGN, EVICTION
    )


@triton.jit
def _multi_update_kernel(
    x_ptr,
    meta_ptr,
    seeds_ptr,
    coefs_ptr,
    q,
    decay,
    eps,
    NT: tl.constexpr,
    KIND: tl.constexpr,
    FAST: tl.constexpr,
    SR: tl.constexpr,
    PROBED: tl.constexpr,
    R: tl.constexpr,
    ALIGN: tl.constexpr,
):
    in_d, _out, n, start, key, lp = _row(meta_ptr, NT, ALIGN)
    update_tile(
        x_ptr + in_d, lp, n, start, key, seeds_ptr, coefs_ptr, q, decay, eps, KIND, FAST, SR, PROBED, R, ALIGN
    )


def out_offsets(xs: Sequence[Tensor]) -> tuple[list[int], int]:
    """Offsets of each tensor in the flat output buffer (rounded up to _PAD) and its total size."""
    offs, total = [], 0
    for x in xs:
        offs.append(total)
        total += -(-x.numel() // _PAD) * _PAD
    return offs, total


def groupable(xs: Sequence[Tensor]) -> bool:
    """Tensors one launch can take: same dtype and device, contiguous, element-aligned addresses."""
    x0 = xs[0]
    return all(
        x.dtype == x0.dtype
        and x.device == x0.device
        and x.is_contiguous()
        and (x.data_ptr() - x0.data_ptr()) % x0.element_size() == 0
        for x in xs
    )


def _table(xs: Sequence[Tensor], keys: Sequence[int], starts: Sequence[int], kind: int, r: int):
    """(device table, programs, alignment hint), cached by everything the table holds."""
    x0 = xs[0]
    sig = (
        kind,
        r,
        x0.device,
        x0.element_size(),
        tuple((x.data_ptr(), x.numel(), k, s) for x, k, s in zip(xs, keys, starts, strict=True)),
    )
    hit = _TABLES.get(sig)
    if hit is not None:
        return hit
    outs, _ = out_offsets(xs)
    rows, first = [], 0
    for x, k, s, o in zip(xs, keys, starts, outs, strict=True):
        rows.append([(x.data_ptr() - x0.data_ptr()) // x0.element_size(), o, x.numel(), s, k, first])
        first += K.programs(x.numel(), s, kind, r)
    nt = triton.next_power_of_2(len(rows))
    rows += [[0, 0, 0, 0, 0, _FAR]] * (nt - len(rows))
    hint = K.align(x0.element_size(), *(v for row in rows[: len(xs)] for v in (row[0], row[1], row[3])))
    if len(_TABLES) >= _MAX_TABLES:
        _TABLES.clear()
    _TABLES[sig] = hit = (upload(torch.tensor(rows, dtype=torch.int64), x0.device), first, hint)
    return hit


def perturb_group(
    xs: Sequence[Tensor],
    keys: Sequence[int],
    seed: Tensor,
    scale: Tensor,
    kind: int,
    starts: Sequence[int] | None = None,
    fast: bool | None = None,
    tile: tuple[int, int] | None = None,
) -> list[Tensor]:
    """[x + scale*u(seed, key) for each x] in one launch; the results are views of one flat buffer.

    ``xs`` must be ``groupable``; ``seed``/``scale`` one-element device tensors (int64 / float32).
    """
    r, warps = tile or K.GROUP_TILE[kind]
    starts = list(starts) if starts is not None else [0] * len(xs)
    meta, progs, hint = _table(xs, keys, starts, kind, r)
    offs, total = out_offsets(xs)
    buf = torch.empty(total, dtype=xs[0].dtype, device=xs[0].device)
    K.launch(
        _multi_perturb_kernel,
        (progs,),
        xs[0],
        buf,
        meta,
        seed,
        scale,
        NT=meta.shape[0],
        KIND=kind,
        FAST=K.fast_default(buf, fast),
        R=r,
        ALIGN=hint,
        EVICTION=K.eviction_policy(),
        num_warps=warps,
    )
    return [buf[o : o + x.numel()].view(x.shape) for x, o in zip(xs, offs, strict=True)]


def update_group_(
    xs: Sequence[Tensor],
    keys: Sequence[int],
    seeds: Tensor,
    coefs: Tensor,
    decay: float,
    kind: int,
    starts: Sequence[int] | None = None,
    fast: bool | None = None,
    tile: tuple[int, int] | None = None,
    eps: float = 0.0,
    probed: int = 0,
) -> None:
    """x <- R(decay*x - sum_j coefs[j] u(seeds[j], key)) for every x, in place, in one launch
    (``probed``/``eps``: as ``kernels.update_``)."""
    r, warps = tile or K.TILE[kind]
    starts = list(starts) if starts is not None else [0] * len(xs)
    meta, progs, hint = _table(xs, keys, starts, kind, r)
    K.launch(
        _multi_update_kernel,
        (progs,),
        xs[0],
        meta,
        seeds,
        coefs,
        seeds.numel(),
        decay,
        eps,
        NT=meta.shape[0],
        KIND=kind,
        FAST=K.fast_default(xs[0], fast),
        SR=xs[0].dtype == torch.bfloat16,
        PROBED=probed,
        R=r,
        ALIGN=hint,
        num_warps=warps,
    )
