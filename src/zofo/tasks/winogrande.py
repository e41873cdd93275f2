"""WinoGrande: fill the blank "_" of a sentence with one of two options.

Official jsonl lines: {sentence, option1, option2, answer: "1"|"2"}. Local data: one jsonl file (pool
"train") or the official folder (`train_xl.jsonl` or `train.jsonl` -> train pool, `dev.jsonl` -> test
pool; `test.jsonl` has no answers and is ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zofo.errors import ZofoError
from zofo.tasks.base import TASKS, Pools, TaskSpec
from zofo.tasks.example import Example, Record
from zofo.tasks.hub import hub_reader
from zofo.tasks.io import find_file, lookup_label, need
from zofo.tasks.superglue import read_jsonl

ANSWERS = {"1": 0, "2": 1, 1: 0, 2: 1}


def norm_winogrande(obj: dict[str, Any], where: str) -> list[Record]:
    sentence = need(obj, "sentence", where, str)
    if "_" not in sentence:
        raise ZofoError(f"{where}: sentence has no blank '_'", "mark the blank with an underscore")
    fields = {key: need(obj, key, where, str) for key in ("option1", "option2")}
    label = lookup_label(ANSWERS, need(obj, "answer", where), where)
    return [Record({"sentence": sentence, **fields, "label": label}, where)]


def read_winogrande(path: Path) -> Pools:
    if path.is_file():
        return {"train": read_jsonl(path, norm_winogrande)}
    train = find_file(path, "train_xl") or find_file(path, "train") if path.is_dir() else None
    test = find_file(path, "dev") if path.is_dir() else None
    if not (train or test):
        raise ZofoError(f"no WinoGrande files at {path}", "expected train_xl.jsonl / dev.jsonl")
    files = {"train": train, "test": test}
    return {pool: read_jsonl(file, norm_winogrande) for pool, file in files.items() if file}


def winogrande_mezo(r: Record) -> Example:
    """MeZO / GPT-3 style: no prompt, each candidate is the whole sentence with the blank filled."""
    options = (r["option1"], r["option2"])
    return Example("", tuple(r["sentence"].replace("_", o, 1) for o in options), r["label"])


def winogrande_replace(r: Record) -> Example:
    prompt = f'{r["sentence"]} Replace the _ in the above sentence with the correct option:'
    return Example(prompt, (" " + r["option1"], " " + r["option2"]), r["label"])


TASKS.register("winogrande")(TaskSpec(
    name="winogrande", templates={"mezo": winogrande_mezo, "replace": winogrande_replace},
    read=read_winogrande, hub=hub_reader("allenai/winogrande", "winogrande_xl", norm_winogrande),
    protocol="WinoGrande jsonl: train_xl.jsonl=train pool, dev.jsonl=test pool",
))
