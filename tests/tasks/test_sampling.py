"""MeZO sampling: sizes, seeds, no overlap; the pooled protocol for small sets; the 1:2 bilevel split."""

from __future__ import annotations

import pytest

from zofo.errors import ZofoError
from zofo.tasks import Example, load_task, sample_splits, split_bilevel
from zofo.tasks.sampling import pooled_sizes

POOL = [Example(f"p{i}", (" a", " b"), i % 2) for i in range(3000)]


def _ids(examples):
    return {e.prompt for e in examples}


def test_pooled_exact_sizes_disjoint_and_seeded():
    splits = sample_splits(POOL, seed=3)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (1000, 500, 1000)
    assert not (_ids(splits.train) & _ids(splits.dev) or _ids(splits.train) & _ids(splits.test)
                or _ids(splits.dev) & _ids(splits.test))
    assert sample_splits(POOL, seed=3) == splits and sample_splits(POOL, seed=4).test != splits.test


@pytest.mark.parametrize(("n", "sizes"), [(120, (48, 24, 48)), (341, (137, 68, 136)), (5, (2, 1, 2)),
                                          (2500, (1000, 500, 1000))])
def test_pooled_sizes_for_small_sets(n, sizes):
    assert pooled_sizes(n, 1000, 500, 1000) == sizes


def test_too_few_examples_is_an_error():
    with pytest.raises(ZofoError, match="too few"):
        sample_splits(POOL[:2])


def test_official_protocol_on_sst2(data):
    splits = sample_splits(load_task("sst2", data / "sst2"), seed=0)
    assert splits.protocol == "official"
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (1000, 500, 872)  # all of GLUE dev
    assert not _ids(splits.train) & _ids(splits.dev)


def test_fewglue_is_pooled(data):
    splits = sample_splits(load_task("cb", data / "superglue" / "CB"), seed=0)
    assert splits.protocol == "pooled"
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (48, 24, 48)


def test_split_bilevel_one_to_two():
    upper, lower = split_bilevel(POOL[:1000], seed=0)
    assert (len(upper), len(lower)) == (333, 667)
    assert not _ids(upper) & _ids(lower) and _ids(upper) | _ids(lower) == _ids(POOL[:1000])
    assert split_bilevel(POOL[:1000], seed=0) == (upper, lower)
    with pytest.raises(ZofoError):
        split_bilevel(POOL, ratio=(0, 2))
