"""The Triton kernels' per-element draws: Philox counters -> hashed bits, normals (Box-Muller) or signs, and where
a program's tile of counters lies in a tensor (``_place``); `triton.py` states the layout."""

from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.language.random import uint_to_uniform_float

# The interpreter truncates float32 -> bf16 where CUDA rounds to nearest even: there it is written out.
_RTNE_BY_HAND = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


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
