"""Where `bigbench:NAME` comes from: --data, $ZOFO_BIGBENCH, the project's data folder, the cache, the index."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.tasks.bigbench_sdist import TOY
from zofo.errors import ZofoError
from zofo.tasks import load_task
from zofo.tasks.bigbench_sources import shared_bigbench


def _write_task(folder, doc=TOY):
    folder.mkdir(parents=True)
    (folder / "task.json").write_text(json.dumps(doc))
    return folder


def test_every_form_of_data_is_accepted(data):
    root = data / "bigbench"
    for given in (root, root / "strategyqa", root / "strategyqa" / "task.json.gz"):
        task = load_task("bigbench:strategyqa", given)
        assert task.name == "bigbench:strategyqa" and len(task.records("train")) == 2290, given
    nested = "fact_checker/covid19_scientific"
    for given in (root, root / "fact_checker", root / nested, root / nested / "task.json"):
        assert load_task(f"bigbench:{nested}", given).name == f"bigbench:{nested}", given


def test_a_bigbench_checkout_is_accepted(tmp_path):
    _write_task(tmp_path / "BIG-bench" / "bigbench" / "benchmark_tasks" / "toy")
    assert len(load_task("bigbench:toy", tmp_path / "BIG-bench").records("train")) == 6


def test_data_of_another_task_is_refused_naming_what_was_tried(data):
    with pytest.raises(ZofoError) as err:
        load_task("bigbench:strategyqa", data / "bigbench" / "winowhy")
    message = str(err.value)
    assert "'strategyqa' not found in --data" in message and "winowhy/strategyqa" in message
    assert "collection root" in message and "\n" not in message
    with pytest.raises(ZofoError, match="task.json of 'winowhy', not of 'strategyqa'"):
        load_task("bigbench:strategyqa", data / "bigbench" / "winowhy" / "task.json.gz")


def test_order_env_checkout_then_project_data_then_cache(tmp_path, monkeypatch, offline):
    shared = tmp_path / "shared-data"
    _write_task(shared / "bigbench" / "toy", TOY | {"examples": TOY["examples"][:3]})
    _write_task(offline / "bigbench" / "toy", TOY | {"examples": TOY["examples"][:4]})
    assert len(load_task("bigbench:toy").records("train")) == 4  # only the cache has it
    monkeypatch.setenv("ZOFO_SHARED_DATA", str(shared))
    assert len(load_task("bigbench:toy").records("train")) == 3  # the project's data before the cache
    _write_task(tmp_path / "checkout" / "bigbench" / "benchmark_tasks" / "toy")
    monkeypatch.setenv("ZOFO_BIGBENCH", str(tmp_path / "checkout"))
    assert len(load_task("bigbench:toy").records("train")) == 6  # $ZOFO_BIGBENCH first
    inside = tmp_path / "checkout" / "bigbench" / "benchmark_tasks" / "toy"
    assert load_task("bigbench", inside).name == "bigbench:toy"  # named from the checkout's task folder


def test_project_data_defaults_to_shared_beside_the_checkout(monkeypatch, data):
    monkeypatch.delenv("ZOFO_SHARED_DATA", raising=False)
    here = shared_bigbench()
    assert here is not None and here.parts[-3:] == ("shared", "data", "bigbench")
    if here.is_dir():  # the layout CI uses: ../shared beside the clone
        assert load_task("bigbench:winowhy").name == "bigbench:winowhy"


def test_nothing_anywhere_lists_every_place_tried(offline, tmp_path, monkeypatch):
    _write_task(tmp_path / "shared" / "bigbench" / "strategyqa")
    monkeypatch.setenv("ZOFO_SHARED_DATA", str(tmp_path / "shared"))
    with pytest.raises(ZofoError) as err:
        load_task("bigbench:stratgyqa")
    message = str(err.value)
    for place in ("$ZOFO_BIGBENCH (not set)", f"project data: {tmp_path}/shared/bigbench/stratgyqa",
                  f"cache: {offline}/bigbench/stratgyqa", "package index: could not download bigbench==1.0.0",
                  "did you mean strategyqa", "--data", "ZOFO_BIGBENCH=", "bigbench-1.0.0.tar.gz"):
        assert place in message, place
    assert "\n" not in message


def test_nested_tasks_are_named_by_their_path(data, tmp_path):
    root = data / "bigbench"
    for given in (root / "fact_checker", root / "fact_checker" / "covid19_scientific",
                  root / "fact_checker" / "covid19_scientific" / "task.json"):
        assert load_task("bigbench", given).name == "bigbench:fact_checker/covid19_scientific", given
    copy = tmp_path / "elsewhere" / "fact_checker"
    shutil.copytree(root / "fact_checker", copy)  # outside every known collection: the folder given names it
    assert load_task("bigbench", copy).name == "bigbench:fact_checker/covid19_scientific"
    assert load_task("bigbench", root / "winowhy").name == "bigbench:winowhy"
