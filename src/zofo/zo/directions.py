"""Seeded directions u that are never stored: u[i] is a pure function of (seed, tensor key, i).

For a tensor with key k (``tensor_key(name)``, a CRC32 of its name) and a step seed s (32 bits,
``step_seed(run_seed, step, probe)``), the Philox key is the 64-bit ``(k << 32) | s`` and element i
(its flat index in the *full* tensor) takes

Elements are laid out in super-blocks of ``L * LANE_B`` (LANE_B = 1024): element e belongs to Philox
counter ``(e // (L*LANE_B)) * LANE_B + e % LANE_B`` and takes lane ``(e // LANE_B) % L`` of it, so the L
values of one counter sit LANE_B apart and a kernel writes each lane as a contiguous row.

* Gaussian (default, L = 4): normal ``lane`` of ``tl.randn4x`` at that counter (one Philox4x32-10 call
  gives four normals, two Box-Muller pairs, exactly as Triton's ``randn4x``).
* Gaussian16 (L = 8): normal ``lane`` of ``philox.randn8x`` at that counter: Box-Muller on the 16-bit halves
  of the four Philox words, so one call gives eight normals and a pass does half the Philox work of the
  Gaussian kind (which is compute-bound on a GPU). The radius takes 2**16 values: |u| < 4.86 and
  E[u u^T] = (1 - 5.3e-6) I, far below what bf16 weights resolve.
* Rademacher (L = 32): bit ``lane`` of the first word of Philox at that counter (``tl.randint``);
  u = +1 where the bit is set, -1 otherwise. One Philox call per 32 elements: the kernel runs at the
  memory floor.

LANE_B is part of the definition of u (fixed, not the kernel's tile size).
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

from .kernels import philox as px
from .options import DIRECTIONS

Direction = Literal["gaussian", "gaussian16", "rademacher"]
KINDS = {"gaussian": 0, "rademacher": 1, "gaussian16": 2}  # the kernels' KIND of each direction
LANES = {0: 4, 1: 32, 2: 8}  # values per Philox counter, by KIND
LANE_B = 1024  # counters per super-block row: part of u's definition (see above)
_CHUNK = 1 << 20  # Philox counters generated at once on the torch path (bounds temporary memory) ...
_CPU_CHUNK = 1 << 18  # ... and on a CPU, where temporaries that stay in cache run 1.3x faster


def chunk_size(device: torch.device) -> int:
    """Elements the torch path generates at once on `device` (bounds temporaries; in cache on a CPU)."""
    return _CPU_CHUNK if device.type == "cpu" else _CHUNK
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


def lanes(kind: int | str) -> int:
    """Values per Philox counter: 4 normals (Gaussian), 8 (Gaussian16) or 32 sign bits (Rademacher); ``kind`` is
    the direction's name or its KIND."""
    return LANES[KINDS[kind] if isinstance(kind, str) else kind]


def _superblock_values(pseed: int | Tensor, counters: Tensor, direction: str) -> Tensor:
    """u over whole super-blocks, flat float32 in element order: counters are those of ``n`` super-blocks
    (n * LANE_B of them); pseed may be a per-counter int64 tensor.  Built in the (super-block, lane, counter)
    layout at once, so that no transposed copy is made."""
    blocks = counters.numel() // LANE_B
    if direction in ("gaussian", "gaussian16"):
        normals = (px.randn4x if direction == "gaussian" else px.randn8x)(pseed, counters)
        return torch.stack([n.view(blocks, LANE_B) for n in normals], dim=1).view(-1)
    word = px.randint4x(pseed, counters)[0].to(torch.int32).view(blocks, 1, LANE_B)  # wraps: same low 32 bits
    shifts = torch.arange(32, dtype=torch.int32, device=counters.device).view(1, 32, 1)
    signs = ((word >> shifts) & 1).to(torch.float32)   # bit j of the word; the shift's sign fill never reaches it
    return signs.mul_(2).sub_(1).view(-1)


def _slice(pseed: int, start: int, end: int, direction: str, device: torch.device) -> Tensor:
    """u[start:end] for one Philox key, generated a bounded number of super-blocks at a time."""
    sbn = lanes(direction) * LANE_B
    s0, s1 = start // sbn, (end + sbn - 1) // sbn
    if s1 - s0 == 0:
        return torch.empty(0, device=device)
    out = torch.empty((s1 - s0) * sbn, dtype=torch.float32, device=device)
    step = max(1, chunk_size(device) // LANE_B)
    for a in range(s0, s1, step):
        b = min(a + step, s1)
        counters = torch.arange(a * LANE_B, b * LANE_B, dtype=torch.int64, device=device)
        out[(a - s0) * sbn : (b - s0) * sbn] = _superblock_values(pseed, counters, direction)
    return out[start - s0 * sbn : end - s0 * sbn]


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
    return _slice(pseed, start, end, direction, device)


def direction_group(
    seed: int,
    keys: list[int],
    numels: list[int],
    direction: Direction = "gaussian",
    device: str | torch.device = "cpu",
    starts: list[int] | None = None,
) -> list[Tensor]:
    """``direction_slice`` of several tensors (flat float32) with ONE Philox evaluation over all their
    counters (per-counter keys): many small tensors cost one batch of torch ops, not one each."""
    check_direction(direction)
    device, sbn = torch.device(device), lanes(direction) * LANE_B
    starts = starts or [0] * len(keys)
    spans = [(s // sbn, (s + n + sbn - 1) // sbn) for s, n in zip(starts, numels, strict=True)]
    if sum(b - a for a, b in spans) * LANE_B > chunk_size(device):  # large tensors: bounded memory, per tensor
        return [
            direction_slice(seed, k, s, s + n, direction, device)
            for k, s, n in zip(keys, starts, numels, strict=True)
        ]
    counters = torch.cat([torch.arange(a * LANE_B, b * LANE_B, dtype=torch.int64) for a, b in spans])
    pseeds = torch.cat(
        [
            torch.full(((b - a) * LANE_B,), philox_seed(seed, k), dtype=torch.int64)
            for (a, b), k in zip(spans, keys, strict=True)
        ]
    )
    vals = _superblock_values(pseeds.to(device), counters.to(device), direction)
    out, at = [], 0
    for (a, b), s, n in zip(spans, starts, numels, strict=True):
        out.append(vals[at + s - a * sbn : at + s - a * sbn + n])
        at += (b - a) * sbn
    return out


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
