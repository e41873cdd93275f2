"""BIG-bench from the `bigbench==1.0.0` sdist: the real path (pip download, extract, parse), on an sdist the
tests build and serve from a local folder, so no test needs the package index."""

from __future__ import annotations

import pytest

from zofo.errors import ZofoError
from zofo.tasks import load_task
from zofo.tasks.bigbench_pypi import cache_dir, fetch_task_json


def test_strategyqa_from_pypi(local_index, data):
    task = load_task("bigbench:strategyqa")
    assert task.name == "bigbench:strategyqa"
    assert (cache_dir() / "pypi" / "bigbench-1.0.0.tar.gz").is_file()  # pip fetched it from the index folder
    assert fetch_task_json("strategyqa") == cache_dir() / "bigbench" / "strategyqa" / "task.json"
    local = load_task("bigbench", data / "bigbench" / "strategyqa")
    assert task.examples("train") == local.examples("train")  # the same task.json as the shared copy


def test_cached_sdist_and_extracted_task_need_no_index(local_index, monkeypatch):
    load_task("bigbench:toy")
    monkeypatch.setenv("PIP_FIND_LINKS", str(local_index / "gone"))  # from here on pip finds nothing
    assert load_task("bigbench:toy").name == "bigbench:toy"  # the extracted task.json
    nested = load_task("bigbench:group/sub")  # extracted from the sdist already in the cache
    assert nested.name == "bigbench:group/sub" and len(nested.records("train")) == 6


def test_unknown_bigbench_task_lists_tasks(local_index):
    fetch_task_json("toy")  # the sdist is now cached
    with pytest.raises(ZofoError, match=r"has no task 'not_a_task'.*choose one of: group/sub, strategyqa, toy"):
        fetch_task_json("not_a_task")


def test_bad_names_are_refused_before_any_download():
    for name in ("../etc", "/abs", "~user/x"):
        with pytest.raises(ZofoError, match="bad BIG-bench task name"):
            fetch_task_json(name)
