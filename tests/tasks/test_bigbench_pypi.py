"""BIG-bench from the PyPI sdist, for real (downloads ~360 MB once into $ZOFO_CACHE or ~/.cache/zofo)."""

from __future__ import annotations

import pytest

from zofo.errors import ZofoError
from zofo.tasks import load_task
from zofo.tasks.bigbench_pypi import cache_dir, fetch_task_json


@pytest.mark.slow
def test_strategyqa_from_pypi(data):
    task = load_task("bigbench:strategyqa")
    assert task.name == "bigbench:strategyqa"
    assert fetch_task_json("strategyqa").is_relative_to(cache_dir())
    local = load_task("bigbench", data / "bigbench" / "strategyqa")
    assert task.examples("train") == local.examples("train")  # the same task.json as the shared copy


@pytest.mark.slow
def test_unknown_bigbench_task_lists_tasks():
    fetch_task_json("strategyqa")  # make sure the sdist is cached
    with pytest.raises(ZofoError, match="no task 'not_a_task'.*choose one of"):
        fetch_task_json("not_a_task")


def test_bad_names_are_refused_before_any_download():
    with pytest.raises(ZofoError, match="bad BIG-bench task name"):
        fetch_task_json("../etc")
