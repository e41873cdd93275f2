"""Task references for meta-training and meta-testing: what one entry of a split file (or one command-line
argument) names, resolved to tasks `zofo.tasks.load_task` can load.

An entry is one of
- `bigbench:NAME`: the BIG-bench task (or group of sub-tasks) NAME under a BIG-bench root folder (the split
  file's `bigbench_root`, `$ZOFO_BIGBENCH`, or `--bigbench-root`; default `../shared/data/bigbench`);
- a path: a BIG-bench task folder or task.json, a folder of such folders (every task under it, sorted), or a
  MetaICL `{task}_{k}_{seed}_{split}.jsonl` file;
- a registered task name (`sst2`, `rte`, ... ; read from the hub without data) or `metaicl:TASK`;
- a mapping `{task: NAME, data: PATH, template: NAME}` for a task with its data folder (`{task: sst2, data:
  ../shared/data/sst2}`, `{task: metaicl:glue-sst2, data: DIR}`).

Relative paths are taken from the current folder, as every path in the project's configs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zofo.errors import ZofoError
from zofo.tasks import TASKS, Task, load_task
from zofo.tasks.bigbench_sources import shared_bigbench
from zofo.tasks.metaicl import metaicl_source

#: where `bigbench:NAME` resolves when neither an argument, `$ZOFO_BIGBENCH`, the split file nor the project's data
#: folder (`shared_bigbench`: `$ZOFO_SHARED_DATA/bigbench`, else the one beside the checkout) says
DEFAULT_BIGBENCH_ROOT = "../shared/data/bigbench"
ENTRY_KEYS = ("task", "data", "template")


@dataclass(frozen=True)
class TaskRef:
    """One task of a pool: how to load it, the name it is reported under, and where it was named."""

    name: str                # the name in tables and result files, e.g. logical_deduction/three_objects
    task: str                # the `load_task` name: bigbench, sst2, metaicl:TASK, ...
    data: str | None         # the `load_task` data path (None: hub / PyPI)
    template: str | None
    where: str               # `file:line` of the split-file entry, or `argument N`

    def load(self) -> Task:
        return load_task(self.task, data=self.data, template=self.template)

    @property
    def key(self) -> tuple:
        """What makes two references the same task, however they were written: the task.json file for BIG-bench,
        the folder and `<task>_<k>_<seed>` files for MetaICL (one split file or the folder with the task's name),
        (name, data path) otherwise. The template is not part of it: the same examples under another prompt are
        the same task, seen or unseen."""
        if self.task == "bigbench" and self.data is not None:
            return ("bigbench", str(_task_json(Path(self.data)).resolve()))
        family, _, name = self.task.partition(":")
        if family == "metaicl" and self.data is not None:
            try:
                folder, stem = metaicl_source(Path(self.data), name or None)
            except ZofoError:  # no such files: loading the task says so, with the entry's file:line
                return (self.task, str(Path(self.data).resolve()))
            return ("metaicl", str(folder.resolve()), stem)
        return (self.task, str(Path(self.data).resolve()) if self.data is not None else None)


def bigbench_root(given: str | Path | None = None, from_file: str | Path | None = None) -> Path:
    """The folder `bigbench:NAME` resolves against: `given` (a command-line option), else `$ZOFO_BIGBENCH`, else
    the split file's `bigbench_root`, else the project's data folder as `zofo train` finds it (`shared_bigbench`:
    `$ZOFO_SHARED_DATA/bigbench`, else `../shared/data/bigbench` beside the checkout), else
    `../shared/data/bigbench` from the current folder."""
    chosen = given or os.environ.get("ZOFO_BIGBENCH") or from_file or shared_bigbench() or DEFAULT_BIGBENCH_ROOT
    return Path(chosen).expanduser()


def resolve(entry: Any, root: Path, where: str) -> list[TaskRef]:
    """The task(s) one entry names (a folder of BIG-bench tasks names several); ZofoError naming `where` when
    the entry is malformed or names nothing."""
    if isinstance(entry, dict):
        return _resolve_mapping(entry, root, where)
    if not isinstance(entry, str) or not entry.strip():
        raise ZofoError(f"{where}: a task entry must be a name, a path or a mapping, got {entry!r}",
                        "write e.g. bigbench:strategyqa, a task folder, or {task: sst2, data: DIR}")
    text = entry.strip()
    family, _, sub = text.partition(":")
    if family == "bigbench" and sub:
        return _bigbench_under(root, sub, None, where)
    if family == "bigbench":
        raise ZofoError(f"{where}: 'bigbench' alone names no task", "write bigbench:NAME or a task folder")
    if text in TASKS or family == "metaicl":
        return [TaskRef(text, text, None, None, where)]
    path = Path(text).expanduser()
    if path.exists():
        return _by_path(path, root, None, where)
    raise ZofoError(f"{where}: {text!r} is neither a task name nor an existing path",
                    "write bigbench:NAME, a task folder, a registered task with its data ({task: sst2, data: "
                    f"DIR}}), or check the path (BIG-bench root: {root})")


def _resolve_mapping(entry: dict, root: Path, where: str) -> list[TaskRef]:
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown or not isinstance(entry.get("task"), str):
        problem = f"unknown key {unknown[0]!r}" if unknown else "no task name (key 'task')"
        raise ZofoError(f"{where}: task entry with {problem}", f"use the keys {', '.join(ENTRY_KEYS)}")
    task, data, template = entry["task"].strip(), entry.get("data"), entry.get("template")
    family, _, sub = task.partition(":")
    if family == "bigbench" and sub:
        return _bigbench_under(Path(data).expanduser() if data else root, sub, template, where)
    if family == "bigbench":
        if not data:
            raise ZofoError(f"{where}: task bigbench needs data", "give data: <task folder>")
        return _by_path(Path(data).expanduser(), root, template, where)
    name = task if data is None else f"{task} ({Path(data).name})"
    name = name if template is None else f"{name} [{template}]"  # its own units and table row
    return [TaskRef(name, task, None if data is None else str(data), template, where)]


def _bigbench_under(root: Path, sub: str, template: str | None, where: str) -> list[TaskRef]:
    path = root / sub
    if not path.exists():
        raise ZofoError(f"{where}: bigbench:{sub}: no folder {sub} under the BIG-bench root {root.resolve()}",
                        "check the name, or point the root elsewhere (bigbench_root in the split file, "
                        "$ZOFO_BIGBENCH or --bigbench-root)")
    return _by_path(path, root, template, where)


def _by_path(path: Path, root: Path, template: str | None, where: str) -> list[TaskRef]:
    """A BIG-bench task folder or task.json, a folder of them, or a MetaICL jsonl file."""
    if path.is_file() and ".jsonl" in path.name:
        return [TaskRef(path.name.split(".jsonl")[0], "metaicl", str(path), template, where)]
    folders = bigbench_folders(path)
    if not folders:
        raise ZofoError(f"{where}: {path} holds no BIG-bench task (no task.json or task.json.gz in it or below)",
                        "give a task folder, a folder of task folders, or a task.json")
    return [TaskRef(_display_name(folder, path, root), "bigbench", str(folder), template, where)
            for folder in folders]


def bigbench_folders(path: Path) -> list[Path]:
    """The BIG-bench tasks at `path`: the file itself, the folder if it holds a task.json(.gz), else every folder
    below it that does (sorted; a task folder's own sub-folders are not searched)."""
    if path.is_file():
        return [path] if path.name.startswith("task.json") else []
    if not path.is_dir():
        return []
    if _has_task_json(path):
        return [path]
    return [found for child in sorted(p for p in path.iterdir() if p.is_dir()) for found in bigbench_folders(child)]


def _has_task_json(folder: Path) -> bool:
    return (folder / "task.json").is_file() or (folder / "task.json.gz").is_file()


def _task_json(path: Path) -> Path:
    if path.is_file():
        return path
    return path / "task.json" if (path / "task.json").is_file() else path / "task.json.gz"


def _display_name(folder: Path, given: Path, root: Path) -> str:
    """Its path under the BIG-bench root when it lies there (logical_deduction/three_objects), else under the
    parent of the folder the user gave (mytasks/a)."""
    task_folder = folder.parent if folder.is_file() else folder
    for base in (root, given.parent):
        try:
            relative = task_folder.resolve().relative_to(base.resolve())
        except (ValueError, OSError):
            continue
        if relative.parts:
            return relative.as_posix()
    return task_folder.name


def load_checked(ref: TaskRef) -> Task:
    """The task, or a one-line ZofoError that names the entry (`file:line`) and why the task does not load."""
    try:
        return ref.load()
    except ZofoError as err:
        raise ZofoError(f"{ref.where}: task {ref.name} does not load: {err.what}", err.fix) from err
    except (OSError, ValueError, KeyError) as err:
        raise ZofoError(f"{ref.where}: task {ref.name} does not load: {type(err).__name__}: {err}",
                        "check the task's files") from err
