"""Tasks: official-format data sources, MeZO prompt templates, seeded sampling.

    task = load_task("rte", data="/data/superglue/RTE")      # or a hub id when data is None
    splits = sample_splits(task, n_train=1000, n_dev=500, n_test=1000, seed=0)
    upper, lower = split_bilevel(splits.train)                # 1:2 (upper_fraction 1/3)

Names: the registered tasks (`TASKS.names()`), `bigbench` with `data=` a task folder or task.json,
`bigbench:<task>` (from `data=`, else the places in zofo.tasks.bigbench_sources, offline first), and
`metaicl:<task>` with `data=` a MetaICL folder. See docs/TASKS.md for the split protocol.
"""

from __future__ import annotations

from pathlib import Path

from zofo.errors import ZofoError
from zofo.tasks import glue, record, squad, superglue, winogrande  # noqa: F401  (they register tasks)
from zofo.tasks.base import TASKS, Task, TaskSpec, build_task
from zofo.tasks.bigbench import bigbench_spec, find_task_json, read_bigbench
from zofo.tasks.bigbench_sources import locate, task_name
from zofo.tasks.example import Example, Record
from zofo.tasks.metaicl import metaicl_spec
from zofo.tasks.sampling import Splits, sample_splits, split_bilevel

__all__ = ["TASKS", "Example", "Record", "Splits", "Task", "TaskSpec", "check_task_name", "default_template",
           "load_task", "sample_splits", "split_bilevel", "task_names"]


def task_names() -> list[str]:
    """Every name `load_task` accepts (families written as `bigbench:<task>`)."""
    return [*TASKS.names(), "bigbench", "bigbench:<task>", "metaicl:<task>"]


def check_task_name(name: str, key: str = "data.task") -> None:
    """Refuse a task name no loader takes (the data and template are the loader's to check)."""
    family, _, _ = name.partition(":")
    if name not in TASKS and family not in ("bigbench", "metaicl"):
        raise ZofoError(f"unknown {key} {name!r}", f"choose one of: {', '.join(task_names())}", "data.task")


def default_template(name: str) -> str:
    """The template `load_task(name)` uses when none is named: the first of the task's templates."""
    family, _, sub = name.partition(":")
    if family == "bigbench":
        spec = bigbench_spec(name)
    elif family == "metaicl":
        spec = metaicl_spec(name, sub or None)
    elif name in TASKS:
        spec = TASKS.get(name)
    else:
        raise ZofoError(f"unknown task {name!r}", f"choose one of: {', '.join(task_names())}")
    return next(iter(spec.templates))


def _bigbench(sub: str, path: Path | None, template: str | None) -> Task:
    """`bigbench` with a task folder or task.json as data, or `bigbench:NAME` from the places
    zofo.tasks.bigbench_sources lists (data, $ZOFO_BIGBENCH, the project's data folder, the cache, the index)."""
    if path is None and not sub:
        raise ZofoError("task 'bigbench' needs data", "give --data <task folder> or use bigbench:<task>")
    file = locate(sub, path) if sub else find_task_json(path)
    _, pools, (metrics, preferred) = read_bigbench(file)
    spec = bigbench_spec(f"bigbench:{sub or task_name(path, file)}", metrics, preferred)
    return build_task(spec, pools, template)


def _metaicl(sub: str, path: Path | None, template: str | None) -> Task:
    if path is None:
        raise ZofoError("MetaICL tasks need data", "give --data <folder of {task}_{k}_{seed}_{split}.jsonl>")
    spec = metaicl_spec(f"metaicl:{sub}" if sub else f"metaicl:{path.name}", sub or None)
    return build_task(spec, spec.read(path), template)


def load_task(name: str, data: str | Path | None = None, template: str | None = None) -> Task:
    """A task by name, from local files in the official format (`data`) or from the hub.

    Raises ZofoError naming the valid task names, templates or files when something does not fit.
    """
    path = Path(data).expanduser() if data is not None else None
    family, _, sub = name.partition(":")
    if family == "bigbench":
        return _bigbench(sub, path, template)
    if family == "metaicl":
        return _metaicl(sub, path, template)
    if name not in TASKS:
        raise ZofoError(f"unknown task {name!r}", f"choose one of: {', '.join(task_names())}")
    spec = TASKS.get(name)
    if path is not None and not path.exists():
        raise ZofoError(f"data path {path} does not exist", f"give a local copy of {name} (official format)")
    if path is None and spec.hub is None:
        raise ZofoError(f"task {name!r} has no hub source", "give --data")
    pools = spec.read(path) if path is not None else spec.hub()
    return build_task(spec, pools, template)
