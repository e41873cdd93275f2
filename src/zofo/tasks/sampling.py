"""Seeded train / dev / test sampling as in MeZO, and the 1:2 bilevel split of the training set.

Protocol (`sample_splits`):
- "official": when the task has a labelled test pool and its train pool holds at least
  n_train + n_dev examples, train and dev are a seeded sample without replacement from the train pool
  (disjoint, as MeZO: 1000 / 500), and test is a seeded sample of min(n_test, all) from the test pool.
  Used e.g. by SST-2 (train.tsv -> train/dev, test.tsv -> test).
- "pooled": otherwise (FewGLUE's 32 training examples, BIG-bench's single pool, a plain list) every
  labelled example of every pool is pooled and shuffled with the seed; test, dev and train are then
  consecutive slices. With enough examples they get exactly the requested sizes; with fewer
  (N < n_train + n_dev + n_test) test and dev get their proportional share floor(N * n / total), at
  least 1 each, and train the rest. E.g. CB (32 + 32 + 56 = 120): 48 train / 24 dev / 48 test.
The splits never share an example.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from zofo.errors import ZofoError
from zofo.tasks.base import Task
from zofo.tasks.example import Example


@dataclass
class Splits:
    """Sampled examples; `protocol` says which rule made them ("official" or "pooled")."""

    train: list[Example]
    dev: list[Example]
    test: list[Example]
    protocol: str = ""


def _pools(source: Task | Sequence[Example]) -> dict[str, list[Example]]:
    if isinstance(source, Task):
        return {split: source.examples(split) for split in ("train", "dev", "test")}
    return {"train": list(source)}


def _official(train: list[Example], test: list[Example], n_train: int, n_dev: int, n_test: int,
              seed: int) -> Splits:
    rng = random.Random(seed)
    picked = rng.sample(range(len(train)), n_train + n_dev)
    tested = rng.sample(range(len(test)), min(n_test, len(test)))
    return Splits([train[i] for i in picked[:n_train]], [train[i] for i in picked[n_train:]],
                  [test[i] for i in tested], "official")


def pooled_sizes(n: int, n_train: int, n_dev: int, n_test: int) -> tuple[int, int, int]:
    """(train, dev, test) sizes for a pool of n examples; see the module docstring."""
    total = n_train + n_dev + n_test
    if n >= total:
        return n_train, n_dev, n_test
    test = max(1, n * n_test // total) if n_test else 0
    dev = max(1, n * n_dev // total) if n_dev else 0
    train = n - test - dev
    if train < (1 if n_train else 0):
        raise ZofoError(f"only {n} labelled examples: too few to split into train/dev/test",
                        "give more data or ask for fewer splits (n_dev=0)")
    return train, dev, test


def _pooled(pool: list[Example], n_train: int, n_dev: int, n_test: int, seed: int) -> Splits:
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    train, dev, test = pooled_sizes(len(pool), n_train, n_dev, n_test)
    picked = [pool[i] for i in order]
    return Splits(picked[test + dev: test + dev + train], picked[test: test + dev], picked[:test], "pooled")


def sample_splits(source: Task | Sequence[Example], n_train: int = 1000, n_dev: int = 500,
                  n_test: int = 1000, seed: int = 0) -> Splits:
    """Seeded, disjoint train / dev / test Examples of a task (or of one list), MeZO's protocol."""
    pools = _pools(source)
    train, test = pools.get("train", []), pools.get("test", [])
    if test and len(train) >= n_train + n_dev:
        return _official(train, test, n_train, n_dev, n_test, seed)
    everything = [example for pool in pools.values() for example in pool]
    if not everything:
        raise ZofoError("the task has no labelled examples", "check the data path")
    return _pooled(everything, n_train, n_dev, n_test, seed)


def split_bilevel(train: list[Example], upper_fraction: float = 1 / 3,
                  seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(upper D_f, lower D_g): a seeded shuffle cut at floor(len * upper_fraction); 1000 -> 333 / 667 at 1/3."""
    n_upper = math.floor(len(train) * upper_fraction + 1e-9)  # the margin keeps 48 / 3 at 16, not 15.999...
    if not 0 < n_upper < len(train):
        raise ZofoError(f"bilevel.upper_fraction {upper_fraction} leaves {n_upper} of the {len(train)} training "
                        "examples for the upper level D_f: each level needs at least one",
                        "use a fraction between 1/len(train) and 1 - 1/len(train), e.g. the paper's 1/3",
                        "bilevel.upper_fraction")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    return [train[i] for i in order[:n_upper]], [train[i] for i in order[n_upper:]]
