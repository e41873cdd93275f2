"""The in-place update's tile (``update_tile``: theta <- R(decay*theta - sum_j c_j u_j) over one program's tile, all
q directions in one pass, stochastic rounding for bf16) and its kernels; `triton.py` launches them."""

from __future__ import annotations

import triton
import triton.language as tl

from .draws import _bits, _cast, _hash32, _normals, _normals8, _place, _signs


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
