"""Seeded directions u that are never stored: u[i] is a pure function of (seed, tensor key, i).

For a tensor with key k (``tensor_key(name)``, a CRC32 of its name) and a step seed s (32 bits,
``step_seed(run_seed, step, probe)``), the Philox key is the 64-bit ``(k << 32) | s`` and element i
(its flat index in the *full* tensor) takes

* Gaussian (default): normal ``i % 4`` of ``tl.randn4x`` at counter ``i // 4``, i.e. one Philox4x32-10
  call gives four normals (two Box-Muller pairs, exactly as Triton's ``randn4x``).
* Rademacher: bit ``i % 32`` of the first word of Philox at counter ``i // 32`` (``tl.randint``);
  u = +1 where the bit is set, -1 otherwise. One Philox call per 32 elements: the kernel runs at the
  memory floor.

So u does not depend on parameter order, on which rank holds which tensor, nor on sharding: a shard
[start, end) generates exactly ``u_full[start:end]``.  E[u u^T] = I for both kinds.

Stochastic-rounding bits use a cheaper stream: ``hash32(hash32(i_lo ^ h) ^ i_hi)`` with
``h = hash32(s ^ hash32(k))``, a pure function of (seed, key, i) independent of u's Philox words.
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
from torch import Tensor

from . import philox as px

Direction = Literal["gaussian", "rademacher"]
DIRECTIONS: tuple[str, ...] = ("gaussian", "rademacher")
_CHUNK = 1 << 20  # Philox counters generated at once on the torch path (bounds temporary memory)
_MASK64 = (1 << 64) - 1


def check_direction(direction: str) -> str:
    """Validate a direction name; returns it."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    return direction


def tensor_key(name: str) -> int:
    """Stable 31-bit key of a parameter name: ``zlib.crc32(name) & 0x7fffffff``."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_seed(run_seed: int, step: int, probe: int = 0) -> int:
    """The 32-bit seed of direction ``probe`` at ``step`` of a run.

    seed = high 32 bits of splitmix64(splitmix64(splitmix64(run_seed) ^ step) ^ probe), with
    splitmix64(x) the finaliser of Steele et al. applied to x + golden-ratio increment.  Distinct
    (run_seed, step, probe) give statistically independent seeds; log them to replay a run.
    """
    x = _splitmix64(run_seed & _MASK64)
    x = _splitmix64(x ^ (step & _MASK64))
    return _splitmix64(x ^ (probe & _MASK64)) >> 32


def philox_seed(seed: int, key: int) -> int:
    """The 64-bit Philox key of (step seed, tensor key): ``(key << 32) | seed``; below 2**63."""
    return ((key & 0x7FFFFFFF) << 32) | (seed & px.M32)


def _gaussian_slice(pseed: int, start: int, end: int, device: torch.device) -> Tensor:
    g0, g1 = start // 4, (end + 3) // 4
    parts = []
    for c in range(g0, g1, _CHUNK):
        counters = torch.arange(c, min(c + _CHUNK, g1), dtype=torch.int64, device=device)
        parts.append(torch.stack(px.randn4x(pseed, counters), dim=1).reshape(-1))
    flat = torch.cat(parts) if parts else torch.empty(0, device=device)
    return flat[start - 4 * g0 : end - 4 * g0]


def _rademacher_slice(pseed: int, start: int, end: int, device: torch.device) -> Tensor:
    w0, w1 = start // 32, (end + 31) // 32
    shifts = torch.arange(32, dtype=torch.int64, device=device)
    parts = []
    for c in range(w0, w1, _CHUNK):
        counters = torch.arange(c, min(c + _CHUNK, w1), dtype=torch.int64, device=device)
        word = px.randint4x(pseed, counters)[0]
        bits = (word[:, None] >> shifts[None, :]) & 1
        parts.append((bits * 2 - 1).to(torch.float32).reshape(-1))
    flat = torch.cat(parts) if parts else torch.empty(0, device=device)
    return flat[start - 32 * w0 : end - 32 * w0]


def direction_slice(
    seed: int,
    key: int,
    start: int,
    end: int,
    direction: Direction = "gaussian",
    device: str | torch.device = "cpu",
) -> Tensor:
    """Elements [start, end) of the flat direction u(seed, key) as float32 (torch path, any device)."""
    check_direction(direction)
    pseed, device = philox_seed(seed, key), torch.device(device)
    if direction == "gaussian":
        return _gaussian_slice(pseed, start, end, device)
    return _rademacher_slice(pseed, start, end, device)


def direction_like(
    tensor: Tensor, seed: int, key: int, direction: Direction = "gaussian", start: int = 0
) -> Tensor:
    """u(seed, key) shaped like ``tensor`` (float32), for a tensor that holds flat elements from ``start``."""
    n = tensor.numel()
    return direction_slice(seed, key, start, start + n, direction, tensor.device).view(tensor.shape)


def rounding_key(seed: int, key: int) -> int:
    """Per-(seed, tensor) key of the stochastic-rounding stream: hash32(seed ^ hash32(key))."""
    return px.hash32_int((seed & px.M32) ^ px.hash32_int(key))


def rounding_bits(seed: int, key: int, start: int, end: int, device: str | torch.device = "cpu") -> Tensor:
    """32 random bits (int64 in [0, 2**32)) per element i in [start, end): hash32(hash32(i_lo ^ h) ^ i_hi)."""
    idx = torch.arange(start, end, dtype=torch.int64, device=torch.device(device))
    h = rounding_key(seed, key)
    return px.hash32(px.hash32((idx & px.M32) ^ h) ^ (idx >> 32))
