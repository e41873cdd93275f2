"""The part of a sharded parameter this process holds, and where it sits in the whole tensor.

u[i] is a function of (seed, tensor key, flat index i in the WHOLE tensor) (`directions`), so a rank that holds
rows [r0, r1) of a weight sharded on dim 0 (FSDP2's `fully_shard`, a DTensor placed as Shard(0)) updates them with
the u of elements [r0 * row, r1 * row): the shard's start. Its rows follow `torch.chunk`: ceil(n / world) per rank,
the last ranks holding fewer (or none). A plain tensor is its own part, starting at 0.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import Tensor


def is_sharded(t: Tensor) -> bool:
    """Whether ``t`` is a DTensor. Such a tensor exists only once torch.distributed.tensor was imported (FSDP does),
    so runs that shard nothing never pay that import (0.5 s)."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def local_part(t: Tensor) -> tuple[Tensor, int]:
    """(the elements of ``t`` this process holds, the flat index of the first one in the whole tensor)."""
    if not is_sharded(t):
        return t, 0
    if [type(p).__name__ for p in t.placements] != ["Shard"] or t.placements[0].dim != 0:
        raise ValueError(f"a ZO update needs weights sharded on dim 0 over one mesh dimension, got {t.placements}")
    local = t.to_local()
    rows = _chunk_rows(t.shape[0], t.device_mesh.size(), t.device_mesh.get_local_rank())
    if local.shape[0] != rows[1] - rows[0]:
        raise ValueError(f"shard of {local.shape[0]} rows where torch.chunk gives {rows}")
    return local, rows[0] * math.prod(t.shape[1:])


def _chunk_rows(n: int, world: int, rank: int) -> tuple[int, int]:
    """The rows [start, end) of dim-0 size ``n`` that `torch.chunk(world)` gives ``rank``."""
    size = -(-n // world)
    return min(rank * size, n), min((rank + 1) * size, n)


def copy_whole_(param: Tensor, whole: Tensor) -> None:
    """``param`` <- ``whole`` (the unsharded values), each process copying the rows it holds."""
    local, start = local_part(param.data)
    flat = whole.reshape(-1)[start:start + local.numel()]
    with torch.no_grad():
        local.copy_(flat.view(local.shape))


def whole(t: Tensor) -> Tensor:
    """The unsharded tensor (every process takes part in the all-gather of a DTensor)."""
    return t.full_tensor() if is_sharded(t) else t
