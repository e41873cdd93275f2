"""BIG-bench multiple-choice tasks from their `task.json` (plain or .gz): no template needed.

`examples: [{input, target_scores: {option: score}}]`: the options are the candidates and the gold is the
highest-scoring option (of several, the first in sorted order). BIG-bench has no official splits: all examples
form one "train" pool, which `sample_splits` cuts into train/dev/test with the seed.

Templates: "bigbench" (default) formats the prompt with the task's own metadata (task_prefix,
example_input_prefix, choices appended when append_choices_to_input, example_output_prefix; BIG-bench's
defaults where absent); "plain" is MeZO's: the input, then " option".

Both templates show and score the options in a seeded per-example permutation (`choice_order`), never in
file order: in many task.json files the gold sits in one place (last in 12 arithmetic sub-tasks, first in
temporal_sequences and physics), and a model trained on choices in that order learns the place, not the
task. The candidates follow the same order as the listed choices, so a tie between candidate scores (the
first wins) does not side with the file's gold either. As BIG-bench's own formatting does, but with the
order a function of the example's content and the seed alone (SHA-256), not of a generator's state: the
same example gets the same prompt in every split, under every data seed, on every machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zofo.errors import ZofoError
from zofo.tasks.base import Pools, TaskSpec
from zofo.tasks.example import Example, Record, join_answer
from zofo.tasks.io import find_file, need, read_json

FORMAT_DEFAULTS = {"task_prefix": "", "example_input_prefix": "\nQ: ", "example_output_prefix": "\nA: ",
                   "choice_prefix": "\n  choice: ", "append_choices_to_input": True}


def find_task_json(path: Path) -> Path:
    """The task.json at `path`: the file itself, in the folder, or in its only sub-folder that has one."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ZofoError(f"BIG-bench path {path} does not exist", "give a task folder or its task.json")
    found = find_file(path, "task", (".json",))
    if found:
        return found
    subtasks = sorted(p.parent for p in path.glob("*/task.json*"))
    if len(subtasks) == 1:
        return find_task_json(subtasks[0])
    if subtasks:
        raise ZofoError(f"{path} holds {len(subtasks)} BIG-bench sub-tasks",
                        f"give one of: {', '.join(str(s) for s in subtasks)}")
    raise ZofoError(f"no task.json in {path}", "give a BIG-bench task folder")


def norm_example(obj: dict[str, Any], where: str, fmt: dict[str, Any]) -> Record:
    """One example; no options, or no option with a positive score, is an error naming the example."""
    scores = need(obj, "target_scores", where, dict)
    if not scores:
        raise ZofoError(f"{where}: example with no candidates (empty target_scores)", "list its options")
    values = list(scores.values())
    if not all(isinstance(v, (int, float)) for v in values) or max(values) <= 0:
        raise ZofoError(f"{where}: target_scores need numbers and one positive score", "mark the gold with 1")
    gold = min(o for o, v in scores.items() if v == max(values))  # of several golds, not the file's first
    label = list(scores).index(gold)
    return Record({"input": need(obj, "input", where, str), "options": list(scores), "label": label,
                   "format": fmt}, where)


Scoring = tuple[tuple[str, ...], str]
"""(metrics reported besides accuracy, the metric that chooses on dev)."""


def task_scoring(doc: dict[str, Any]) -> Scoring:
    """What a task.json asks to be scored by, of what zofo computes: macro_f1 (besides accuracy, which
    BIG-bench calls multiple_choice_grade), and whether it is the task's preferred score."""
    asked = doc.get("metrics") or []
    extra = ("macro_f1",) if "macro_f1" in asked else ()
    return extra, "macro_f1" if doc.get("preferred_score") == "macro_f1" else "accuracy"


def read_bigbench(path: Path) -> tuple[str, Pools, Scoring]:
    """(task name, pools, scoring) of one BIG-bench task.json."""
    file = find_task_json(path)
    doc = read_json(file)
    examples = need(doc, "examples", str(file), list)
    fmt = {key: doc.get(key, default) for key, default in FORMAT_DEFAULTS.items()}
    records = [norm_example(obj, f"{file}: examples[{i}]", fmt) for i, obj in enumerate(examples)]
    if not records:
        raise ZofoError(f"{file}: no examples", "a task.json needs a non-empty examples list")
    return str(doc.get("name") or file.parent.name), {"train": records}, task_scoring(doc)


#: seed of `choice_order`; part of every BIG-bench prompt (another value reorders the choices of every example)
CHOICE_SEED = 0


def choice_order(text: str, options: Sequence[str], seed: int = CHOICE_SEED) -> list[int]:
    """Indices of `options` in the order they are shown and scored: a uniformly random permutation, fixed by
    the seed and the example's content (its input and its set of options), whatever order `options` come in.

    Each option is ranked by SHA-256 of (seed, input, the sorted options, the option): independent keys of
    distinct options, so every order is equally likely and none depends on the file's order.
    """
    content = [seed, text, sorted(options)]
    keys = [hashlib.sha256(json.dumps([*content, o]).encode()).digest() for o in options]
    return sorted(range(len(options)), key=keys.__getitem__)


def shuffled(r: Record) -> tuple[list[str], int]:
    """(the record's options in `choice_order`, the gold's index among them)."""
    order = choice_order(r["input"], r["options"])
    return [r["options"][i] for i in order], order.index(r["label"])


def bigbench_format(r: Record) -> Example:
    fmt, (options, label) = r["format"], shuffled(r)
    choices = "".join(fmt["choice_prefix"] + o for o in options)
    query = r["input"] + (choices if fmt["append_choices_to_input"] else "")
    prompt = fmt["task_prefix"] + fmt["example_input_prefix"] + query + fmt["example_output_prefix"]
    prompt = prompt.lstrip().rstrip(" ")
    return Example(prompt, tuple(join_answer(prompt, o) for o in options), label)


def bigbench_plain(r: Record) -> Example:
    prompt, (options, label) = r["input"].strip(), shuffled(r)
    return Example(prompt, tuple(join_answer(prompt, o) for o in options), label)


TEMPLATES = {"bigbench": bigbench_format, "plain": bigbench_plain}


def bigbench_spec(name: str, metrics: tuple[str, ...] = (), metric: str = "accuracy") -> TaskSpec:
    """A TaskSpec for one BIG-bench task (made when loaded: every task.json is its own task)."""
    return TaskSpec(name=name, templates=TEMPLATES, read=lambda p: read_bigbench(p)[1],
                    protocol="BIG-bench task.json: all examples form one pool, split with the seed",
                    metrics=metrics, metric=metric)
