"""MeZO sampling: sizes, seeds, no overlap; the pooled protocol for small sets; the 1:2 bilevel split."""

from __future__ import annotations

from fractions import Fraction

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


@pytest.mark.parametrize("n, fraction, n_upper", [(48, 1 / 3, 16), (67, 1 / 3, 22), (137, 1 / 3, 45), (48, 0.5, 24),
                                                  (48, 0.2, 9), (1000, 0.2, 200)])
def test_split_bilevel_cuts_at_the_floor_of_the_fraction(n, fraction, n_upper):
    upper, lower = split_bilevel(POOL[:n], fraction, seed=1)
    assert (len(upper), len(lower)) == (n_upper, n - n_upper)
    assert n_upper == int(Fraction(n) * Fraction(fraction).limit_denominator(10))  # exact arithmetic agrees
    assert not _ids(upper) & _ids(lower) and _ids(upper) | _ids(lower) == _ids(POOL[:n])


def test_split_bilevel_at_one_third_is_the_integer_one_to_two_split():
    """The default cut equals n * 1 // 3, the integer 1:2 split of every earlier run, for every size up to 3000."""
    assert all(len(split_bilevel(POOL[:n])[0]) == n // 3 for n in range(3, 3001))


def test_split_bilevel_refuses_an_empty_level():
    with pytest.raises(ZofoError, match="leaves 0 of the 48 training examples") as error:
        split_bilevel(POOL[:48], 0.01)
    assert error.value.key == "bilevel.upper_fraction"
    with pytest.raises(ZofoError, match="leaves 48 of the 48"):
        split_bilevel(POOL[:48], 1.0)


def test_a_run_splits_its_training_set_by_the_configured_fraction(tmp_path):
    """`bilevel.upper_fraction` reaches the upper and lower example streams of a bilevel run."""
    from dataclasses import replace

    from zofo.run.options import RunConfig
    from zofo.run.recipe import Run

    cfg = RunConfig()
    cfg.train.method, cfg.train.output_dir, cfg.model.device = "bilevel-zofo", str(tmp_path), "cpu"
    splits = sample_splits(POOL, n_train=90, n_dev=10, n_test=10, seed=0)
    for fraction, n_upper in [(1 / 3, 30), (0.5, 45), (0.2, 18)]:
        cfg.bilevel = replace(cfg.bilevel, upper_fraction=fraction)
        run = Run(cfg)
        streams = run.batches(run.example_pools(splits), tokenizer=None).streams
        assert (len(streams["upper"].examples), len(streams["lower"].examples)) == (n_upper, 90 - n_upper)
    cfg.train.method = "mezo"  # one stream of every example; no split, so two examples are enough
    pools = Run(cfg).example_pools(sample_splits(POOL, n_train=2, n_dev=1, n_test=1, seed=0))
    assert list(pools) == ["train"] and len(pools["train"]) == 2


def test_a_split_that_leaves_a_level_empty_fails_before_the_model_loads(tmp_path, monkeypatch):
    from dataclasses import replace

    from zofo.run import recipe as training
    from zofo.run.options import RunConfig

    cfg = RunConfig()
    cfg.train.method, cfg.train.output_dir, cfg.model.device = "bilevel-zofo", str(tmp_path / "run"), "cpu"
    cfg.bilevel = replace(cfg.bilevel, upper_fraction=0.01)
    monkeypatch.setattr(training, "resolve_source", lambda name: None)
    monkeypatch.setattr(training.Run, "load_data",
                        lambda self: (sample_splits(POOL, n_train=48, n_dev=8, n_test=8, seed=0), None))
    monkeypatch.setattr(training.Run, "build_model", lambda self: pytest.fail("the model was loaded first"))
    with pytest.raises(ZofoError, match="leaves 0 of the 48 training examples"):
        training.Run(cfg).start()
    assert not (tmp_path / "run").exists()  # no run folder left behind
