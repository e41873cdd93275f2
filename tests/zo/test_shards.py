"""A shard updated with its global offset moves exactly as its rows of the whole tensor do."""

from __future__ import annotations

import pytest
import torch

from zofo.zo.kernels.ops import sgd_update_many_
from zofo.zo.shards import _chunk_rows, local_part


@pytest.mark.parametrize("n, world", [(7, 2), (5, 3), (2, 4), (64, 8)])
def test_the_rows_of_a_rank_are_those_torch_chunk_gives_it(n, world):
    chunks = torch.chunk(torch.arange(n), world)
    for rank in range(world):
        start, end = _chunk_rows(n, world, rank)
        expected = chunks[rank].tolist() if rank < len(chunks) else []
        assert list(range(start, end)) == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_updating_each_shard_at_its_offset_equals_updating_the_whole_tensor(dtype):
    whole = torch.randn(7, 300, generator=torch.Generator().manual_seed(0)).to(dtype)
    seeds, coefs = [11, 12], [1e-2, -3e-3]
    expected = whole.clone()
    sgd_update_many_([expected], [5], seeds, coefs, decay=0.999, backend="torch")
    parts = [whole[:4].clone(), whole[4:].clone()]
    sgd_update_many_(parts, [5, 5], seeds, coefs, decay=0.999, backend="torch", starts=[0, 4 * 300])
    assert torch.equal(torch.cat(parts), expected)
    shifted = whole[4:].clone()
    sgd_update_many_([shifted], [5], seeds, coefs, decay=0.999, backend="torch")  # offset 0: other u, other bits
    assert not torch.equal(shifted, expected[4:])


def test_a_plain_tensor_is_its_own_part():
    t = torch.ones(3, 2)
    part, start = local_part(t)
    assert part is t and start == 0
