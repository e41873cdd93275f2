"""MetaICL jsonl tasks: lines {task, input, output, options}, files `{task}_{k}_{seed}_{split}.jsonl`.

`load_task("metaicl:<task>", data=FOLDER)` reads `<task>_16_100_{train,dev,test}.jsonl` (k=16, seed=100,
MetaICL's defaults) or, when those are absent, the first (k, seed) found; a path to one such file
reads its siblings of the same (task, k, seed). Any other jsonl file is one "train" pool. The
options are the candidates and `output` the gold.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zofo.errors import ZofoError
from zofo.tasks.base import Pools, TaskSpec
from zofo.tasks.example import Example, Record, join_answer
from zofo.tasks.io import find_file, iter_jsonl, need

FILE_NAME = re.compile(r"^(?P<task>.+)_(?P<k>\d+)_(?P<seed>\d+)_(?P<split>train|dev|test)\.jsonl(\.gz)?$")


def norm_metaicl(obj: dict[str, Any], where: str) -> Record:
    options = need(obj, "options", where, list)
    if not options:
        raise ZofoError(f"{where}: example with no candidates (empty options)", "list the answer options")
    output = need(obj, "output", where, str)
    if output not in options:
        raise ZofoError(f"{where}: unknown label {output!r}, not among the options",
                        "output must be one of the options")
    return Record({"input": need(obj, "input", where, str), "options": [str(o) for o in options],
                   "label": options.index(output)}, where)


def _read(path: Path) -> list[Record]:
    return [norm_metaicl(obj, where) for where, obj in iter_jsonl(path)]


def _stem(folder: Path, task: str) -> str:
    """`<task>_<k>_<seed>` of the split files to read, preferring k=16 and seed=100."""
    stems = sorted({m.group(0).rsplit("_", 1)[0] for p in folder.glob(f"{task}_*.jsonl*")
                    if (m := FILE_NAME.match(p.name)) and m.group("task") == task})
    if not stems:
        raise ZofoError(f"no MetaICL files {task}_<k>_<seed>_<split>.jsonl in {folder}",
                        "check the task name and the folder")
    return f"{task}_16_100" if f"{task}_16_100" in stems else stems[0]


def metaicl_source(path: Path, task: str | None = None) -> tuple[Path, str | None]:
    """Where a MetaICL task is read from: (folder, `<task>_<k>_<seed>`) for its split files, or (the file, None) for
    a jsonl file of any other name (one "train" pool). A path to one split file names the same task as its folder
    with the task's name, which is how a split file's check knows them for one task."""
    match = FILE_NAME.match(path.name) if path.is_file() else None
    if path.is_file() and not match:
        return path, None
    if match:
        return path.parent, f'{match.group("task")}_{match.group("k")}_{match.group("seed")}'
    if path.is_dir() and task:
        return path, _stem(path, task)
    raise ZofoError(f"MetaICL data {path} is not a jsonl file or folder", "use --task metaicl:<task>")


def read_metaicl(path: Path, task: str | None = None) -> Pools:
    """Pools of a MetaICL task; see the module docstring for how files are chosen."""
    folder, stem = metaicl_source(path, task)
    if stem is None:
        return {"train": _read(folder)}
    pools = {}
    for split in ("train", "dev", "test"):
        file = find_file(folder, f"{stem}_{split}")
        if file:
            pools[split] = _read(file)
    return pools


def metaicl_direct(r: Record) -> Example:
    prompt = r["input"].strip()
    return Example(prompt, tuple(join_answer(prompt, o) for o in r["options"]), r["label"])


def metaicl_newline(r: Record) -> Example:
    return Example(r["input"].strip() + "\n", tuple(o.strip() for o in r["options"]), r["label"])


def metaicl_spec(name: str, task: str | None) -> TaskSpec:
    """A TaskSpec for one MetaICL task (made when loaded)."""
    return TaskSpec(name=name, templates={"direct": metaicl_direct, "newline": metaicl_newline},
                    read=lambda p: read_metaicl(p, task),
                    protocol="MetaICL: {task}_{k}_{seed}_{train,dev,test}.jsonl = pools of the same names")
