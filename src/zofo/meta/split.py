"""A meta-learning split file: which tasks meta-train and which are held out for meta-test (MetaICL-style).

    # configs/meta/bigbench_split.yaml
    bigbench_root: ../shared/data/bigbench      # optional: where bigbench:NAME resolves
    meta_train:
      - bigbench:strategyqa
      - {task: sst2, data: ../shared/data/sst2}
    meta_test:
      - bigbench:logical_deduction/three_objects

`read_split` refuses, before anything trains and with the file:line of the entry, an unknown key, a missing or
empty list, an entry that names nothing, a task named twice (in one list or in both: the same task.json, or the same
data under another template, counts once however it is written), two different tasks under one name in a list, and a
task that does not load. Entry forms: `zofo.meta.pool`.

Per-task data for meta-training (`meta_train_data`): upper 256 / lower 512 examples (the paper's), drawn with the
seed; a task with fewer than 768 examples gives all it has, cut 1:2 (100 examples: 33 upper / 67 lower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zofo.config import parse_yaml, yaml_text
from zofo.errors import ZofoError
from zofo.meta.pool import TaskRef, bigbench_root, load_checked, resolve
from zofo.tasks import Task, sample_splits, split_bilevel
from zofo.tasks.example import Example

LISTS = ("meta_train", "meta_test")
SPLIT_KEYS = ("bigbench_root", *LISTS)
UPPER, LOWER = 256, 512  # the paper's per-task examples of D_f and D_g in meta-training


@dataclass
class Split:
    """The resolved split: its tasks by list, each with its loaded Task (every one was loaded to check it)."""

    path: Path
    meta_train: list[TaskRef]
    meta_test: list[TaskRef]
    tasks: dict[TaskRef, Task] = field(default_factory=dict, repr=False)

    def task(self, ref: TaskRef) -> Task:
        return self.tasks[ref]


def read_split(path: str | Path, root: str | Path | None = None, lists: tuple[str, ...] = LISTS) -> Split:
    """Read and check a split file (see the module docstring). `root` overrides where bigbench:NAME resolves;
    `lists`: the lists whose tasks are loaded to check them (both by default)."""
    path = Path(path)
    doc, node = _read_yaml(path)
    unknown = [key for key in doc if key not in SPLIT_KEYS]
    if unknown:
        raise ZofoError(f"{path}:{_key_line(node, unknown[0])}: unknown key {unknown[0]!r}",
                        f"a split file has the keys {', '.join(SPLIT_KEYS)}")
    base = bigbench_root(root, doc.get("bigbench_root"))
    refs = {name: _read_list(path, doc, node, name, base) for name in LISTS}
    _refuse_repeats(refs)
    split = Split(path, refs["meta_train"], refs["meta_test"])
    for name in lists:
        for ref in refs[name]:
            split.tasks[ref] = load_checked(ref)
    return split


def _read_yaml(path: Path) -> tuple[dict, yaml.Node | None]:
    if not path.is_file():
        raise ZofoError(f"split file {path} does not exist", "check the path (e.g. configs/meta/bigbench_split.yaml)")
    doc, node = parse_yaml(path, yaml_text(path))
    if not isinstance(doc, dict):
        raise ZofoError(f"{path}:1: a split file is a mapping with the lists {' and '.join(LISTS)}",
                        "see configs/meta/bigbench_split.yaml")
    return doc, node


def _key_line(node: yaml.Node | None, key: str) -> int:
    """1-based line of a top-level key."""
    for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
        if key_node.value == key:
            return key_node.start_mark.line + 1
    return 1


def _item_lines(node: yaml.Node | None, key: str) -> list[int]:
    """1-based line of every item of the top-level list `key`."""
    for key_node, value in node.value if isinstance(node, yaml.MappingNode) else ():
        if key_node.value == key and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _read_list(path: Path, doc: dict, node: yaml.Node | None, name: str, root: Path) -> list[TaskRef]:
    if name not in doc:
        raise ZofoError(f"{path}: no {name} list", f"add '{name}:' with one task per line ('- bigbench:NAME')")
    items, line = doc[name], _key_line(node, name)
    if items is None or items == []:
        raise ZofoError(f"{path}:{line}: {name} is empty", "list at least one task under it")
    if not isinstance(items, list):
        raise ZofoError(f"{path}:{line}: {name} must be a list of tasks, got {type(items).__name__}",
                        "write one '- task' item per line")
    lines = _item_lines(node, name)
    return [ref for item, at in zip(items, lines, strict=True) for ref in resolve(item, root, f"{path}:{at}")]


def _refuse_repeats(refs: dict[str, list[TaskRef]]) -> None:
    """A task named twice in one list, or in both, is refused at its second mention; so are two different tasks
    under one name in a list (blocks, units and tables are keyed by it)."""
    seen: dict[tuple, tuple[str, TaskRef]] = {}
    for name in LISTS:
        named: dict[str, TaskRef] = {}
        for ref in refs[name]:
            other = named.setdefault(ref.name, ref)
            if other is not ref and other.key != ref.key:
                raise ZofoError(f"{ref.where}: two different tasks in {name} are named {ref.name} (the first at "
                                f"{other.where})", "give each task a distinct folder name")
            earlier = seen.get(ref.key)
            if earlier is None:
                seen[ref.key] = (name, ref)
                continue
            first_list, first = earlier
            if first_list != name:
                raise ZofoError(f"{ref.where}: task {ref.name} is in both meta_train ({first.where}) and meta_test",
                                "a meta-test task must be unseen in meta-training: remove it from one list")
            raise ZofoError(f"{ref.where}: task {ref.name} is listed twice in {name} (first at {first.where})",
                            "remove the repeat")


@dataclass
class TaskData:
    """One meta-training task's examples: D_f (upper level) and D_g (lower level), disjoint."""

    name: str
    upper: list[Example]
    lower: list[Example]
    dev: list[Example] = field(default_factory=list)  # held out from both levels (meta-training's dev)


def meta_train_data(split: Split, upper: int = UPPER, lower: int = LOWER, seed: int = 0,
                    n_dev: int = 0) -> list[TaskData]:
    """Per meta-train task, `upper` / `lower` examples drawn with the seed (fewer for a small task: all of its
    examples, cut in the ratio upper : lower, e.g. 100 -> 33 / 67); a task too small for both levels is refused.
    `n_dev` > 0 also holds out that many dev examples per task, disjoint from both levels (a small task gives its
    share: `zofo.tasks.sampling.pooled_sizes`); 0 draws exactly what it always drew."""
    if upper < 1 or lower < 1:
        raise ZofoError(f"per-task split {upper} / {lower}: each level needs at least one example",
                        "use the paper's 256 / 512")
    data = []
    for ref in split.meta_train:
        sampled = sample_splits(split.task(ref), n_train=upper + lower, n_dev=n_dev, n_test=0, seed=seed)
        train = sampled.train
        if math.floor(len(train) * upper / (upper + lower) + 1e-9) < 1 or len(train) < 2:
            raise ZofoError(f"{ref.where}: task {ref.name} has {len(train)} examples, too few for an upper and a "
                            f"lower level in the ratio {upper}:{lower}", "give more data or drop the task")
        d_f, d_g = split_bilevel(train, upper / (upper + lower), seed=seed)
        data.append(TaskData(ref.name, d_f, d_g, sampled.dev))
    return data
