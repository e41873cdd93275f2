"""Counter-based random bits in plain torch, bit-identical to Triton's ``tl.philox``.

Philox4x32-10 (Salmon et al., SC'11) maps a 128-bit counter (c0, c1, c2, c3) and a 64-bit key
(k0, k1) to four 32-bit words through ten rounds of

    c0' = mulhi(B, c2) ^ c1 ^ k0      c1' = mullo(B, c2)
    c2' = mulhi(A, c0) ^ c3 ^ k1      c3' = mullo(A, c0)
    k0 += 0x9E3779B9                  k1 += 0xBB67AE85

with A = 0xD2511F53, B = 0xCD9E8D57 -- exactly ``triton.language.random.philox_impl``.  Triton takes the
key from a 64-bit seed (k0 = low half, k1 = high half) and ``tl.randint4x(seed, offset)`` uses the
counter (offset_lo, offset_hi, 0, 0).  Words are held in int64 tensors with values in [0, 2**32):
torch lacks full uint32 arithmetic.  A 32x32-bit product fits in 64 bits; int64 multiplication wraps
modulo 2**64, so the int64 product holds exactly the bits of the unsigned one: its low word is the low 32
bits, its high word the next 32 (an arithmetic shift, then a mask that drops the sign fill).

Also here: Triton's uint32 -> [0, 1) float map and Box-Muller (``tl.randn4x``), the cheaper eight normals per
call of the ``gaussian16`` directions (``randn8x``), and ``hash32`` (the
"lowbias32" integer hash), the cheap per-element bits used for stochastic rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

M32 = 0xFFFFFFFF
PHILOX_A = 0xD2511F53
PHILOX_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
ROUNDS = 10
# Triton's uint_to_uniform_float scale: the largest float with (2**31 - 1) * scale < 1.
UNIFORM_SCALE = 4.6566127342e-10


def mullo32(a: Tensor, b: int) -> Tensor:
    """a*b mod 2**32 for a in [0, 2**32) held in int64 and a 32-bit constant b (the wrapped int64
    product keeps the low 32 bits)."""
    return (a * b) & M32


def philox(
    seed: int | Tensor, c0: Tensor, c1: Tensor | int = 0, c2: Tensor | int = 0, c3: Tensor | int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-10 of counter (c0, c1, c2, c3) under the 64-bit ``seed``; same bits as ``tl.philox``.

    c1 and c3 (the low words of the products) only ever meet xors, so they keep their product's high bits
    until the end; c0 and c2, which are multiplied next, are masked to 32 bits every round."""
    k0, k1 = seed & M32, (seed >> 32) & M32
    c1, c2, c3 = (torch.full_like(c0, c) if isinstance(c, int) else c for c in (c1, c2, c3))
    for _ in range(ROUNDS):
        product_b, product_a = c2 * PHILOX_B, c0 * PHILOX_A   # < 2**64: the wrapped int64 holds every bit
        c0 = (product_b >> 32).bitwise_xor_(c1).bitwise_xor_(k0).bitwise_and_(M32)
        c2 = (product_a >> 32).bitwise_xor_(c3).bitwise_xor_(k1).bitwise_and_(M32)
        c1, c3 = product_b, product_a
        k0, k1 = (k0 + PHILOX_KEY_A) & M32, (k1 + PHILOX_KEY_B) & M32
    return c0, c1 & M32, c2, c3 & M32


def randint4x(seed: int, offset: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``tl.randint4x(seed, offset)`` for int64 offsets: counter (offset_lo, offset_hi, 0, 0)."""
    return philox(seed, offset & M32, (offset >> 32) & M32)


def uniform(word: Tensor) -> Tensor:
    """Triton's ``uint_to_uniform_float``: read the word as int32, fold negatives (~x), scale to [0, 1)."""
    folded = torch.where(word >= 2**31, M32 - word, word)
    return folded.to(torch.float32) * torch.tensor(UNIFORM_SCALE, dtype=torch.float32)


def box_muller(u1: Tensor, u2: Tensor) -> tuple[Tensor, Tensor]:
    """Triton's ``pair_uniform_to_normal``: r = sqrt(-2 ln max(u1, 1e-7)), (r cos 2 pi u2, r sin 2 pi u2)."""
    u1 = torch.clamp_min(u1, 1.0e-7)  # the scalar is cast to float32, as tl.maximum(1.0e-7, u1)
    th = torch.tensor(6.283185307179586, dtype=torch.float32) * u2
    r = torch.sqrt(-2.0 * torch.log(u1))
    return r * torch.cos(th), r * torch.sin(th)


def randn4x(seed: int, offset: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``tl.randn4x(seed, offset)``: four standard normals (float32) per Philox call."""
    i1, i2, i3, i4 = randint4x(seed, offset)
    n1, n2 = box_muller(uniform(i1), uniform(i2))
    n3, n4 = box_muller(uniform(i3), uniform(i4))
    return n1, n2, n3, n4


def half_uniforms(word: Tensor) -> tuple[Tensor, Tensor]:
    """Two uniforms in (0, 1) from one word's 16-bit halves: (h + 1/2) / 2**16, low half first (exact in float32)."""
    scale = torch.tensor(1.0 / 65536.0, dtype=torch.float32)
    return ((word & 0xFFFF).to(torch.float32) + 0.5) * scale, ((word >> 16).to(torch.float32) + 0.5) * scale


def randn8x(seed: int, offset: Tensor) -> tuple[Tensor, ...]:
    """Eight standard normals (float32) per Philox call: Box-Muller on the 16-bit halves of each of the four
    words (word j gives normals 2j, 2j+1; ``box_muller``'s clamp never applies, as u1 >= 2**-17). Half the
    Philox work of ``randn4x`` per normal; the radius takes 2**16 values, so |z| < 4.86 (radii above it, 7.6e-6
    of a true normal's, are cut) and E[z^2] = 1 - 5.3e-6."""
    return tuple(n for word in randint4x(seed, offset) for n in box_muller(*half_uniforms(word)))


def hash32(x: Tensor) -> Tensor:
    """lowbias32 (C. Wellons): x ^= x>>16; x *= 0x7feb352d; x ^= x>>15; x *= 0x846ca68b; x ^= x>>16."""
    x = x ^ (x >> 16)
    x = mullo32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mullo32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash32_int(x: int) -> int:
    """``hash32`` of one Python int (same arithmetic)."""
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)
