"""Stochastic rounding of float32 values to bf16 / fp16 (torch path).

A ZO update lr * c * u is usually far below one bf16 ulp of the weight (ulp(0.03) = 2**-13), so
round-to-nearest drops it entirely, every step.  Stochastic rounding (SR) picks the upper neighbour
with probability equal to the distance from the lower one in ulps, so E[SR(x)] = x: the update is
realised on average.  The random bits come from ``directions.rounding_bits`` (a function of
(seed, tensor key, element)), so the rounded result is deterministic and device-independent.

bf16: add 16 random bits to the float32 bit pattern and truncate the low 16 bits (sign-magnitude,
so the magnitude is rounded up with probability frac; unbiased).  fp16: explicit neighbours, the
upper one taken when bits/2**32 < frac.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .directions import chunk_size, rounding_bits

LOW_PRECISION = (torch.bfloat16, torch.float16)  # dtypes whose updates round stochastically


def _sr_bf16(x: Tensor, bits: Tensor) -> Tensor:
    pattern = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    pattern = (pattern + (bits & 0xFFFF)) & 0xFFFF0000
    pattern = torch.where(pattern >= 2**31, pattern - 2**32, pattern).to(torch.int32)
    out = pattern.view(torch.float32).to(torch.bfloat16)
    return torch.where(torch.isnan(x), x.to(torch.bfloat16), out)


def _sr_fp16(x: Tensor, bits: Tensor) -> Tensor:
    near = x.to(torch.float16)
    near = torch.where(near == 0, torch.copysign(near.float(), x).to(torch.float16), near)
    away = (near.abs().float() < x.abs()).to(torch.int16) * 2 - 1  # +1: neighbour of larger magnitude
    other = (near.view(torch.int16) + away).view(torch.float16)
    gap = (other.float() - near.float()).abs()
    frac = torch.where(gap > 0, (x - near.float()).abs() / gap, torch.zeros_like(x))
    take = bits.to(torch.float64) * 2.0**-32 < frac.double()
    return torch.where(take & torch.isfinite(x), other, near)


def stochastic_round(x: Tensor, dtype: torch.dtype, seed: int, key: int, start: int = 0) -> Tensor:
    """Round float32 ``x`` (flat elements [start, start + numel) of tensor ``key``) to ``dtype``.

    Unbiased: E[SR(x)] = x.  float32 / float64 targets are a plain cast.
    """
    if dtype not in LOW_PRECISION:
        return x.to(dtype)
    flat = x.float().contiguous().view(-1)
    out = torch.empty(flat.shape, dtype=dtype, device=x.device)
    rounder = _sr_bf16 if dtype == torch.bfloat16 else _sr_fp16
    step = chunk_size(x.device)  # the int64 temporaries stay in cache: 8x faster on a CPU than in one piece
    for i in range(0, flat.numel(), step):
        part = flat[i : i + step]
        bits = rounding_bits(seed, key, start + i, start + i + part.numel(), x.device)
        out[i : i + part.numel()] = rounder(part, bits)
    return out.view(x.shape)
