"""SuperGLUE readers (official jsonl, plain or .gz) and the task specs of RTE, CB, BoolQ, WiC, WSC,
MultiRC and COPA.

Local data is a folder in the SuperGLUE / FewGLUE layout: `train.jsonl` -> pool "train",
`dev32.jsonl` (FewGLUE) -> pool "dev", `val.jsonl` -> pool "test" (the official validation set, the
test set of MeZO's protocol; the official `test.jsonl` has no labels and is ignored). A single .jsonl
file is one "train" pool. How pools become train/dev/test is `zofo.tasks.sampling`: FewGLUE's 32
training examples are too few, so all labelled files are pooled and split with the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zofo.errors import ZofoError
from zofo.tasks.base import TASKS, Pools, TaskSpec
from zofo.tasks.example import Record
from zofo.tasks.hub import hub_reader
from zofo.tasks.io import find_file, iter_jsonl, lookup_label, need
from zofo.tasks.superglue_templates import TEMPLATES

Normalize = Callable[[dict[str, Any], str], list[Record]]

BINARY = {False: 0, True: 1}
RTE_LABELS = {"entailment": 0, "not_entailment": 1, 0: 0, 1: 1}
CB_LABELS = {"entailment": 0, "contradiction": 1, "neutral": 2, 0: 0, 1: 1, 2: 2}
FILES = {"train": "train", "dev": "dev32", "test": "val"}


def _record(obj: dict[str, Any], where: str, text_fields: tuple[str, ...], labels: dict, **extra) -> Record:
    fields = {key: need(obj, key, where, str) for key in text_fields}
    fields["label"] = lookup_label(labels, need(obj, "label", where), where)
    return Record({**fields, **extra}, where)


def norm_rte(obj: dict[str, Any], where: str) -> list[Record]:
    return [_record(obj, where, ("premise", "hypothesis"), RTE_LABELS)]


def norm_cb(obj: dict[str, Any], where: str) -> list[Record]:
    return [_record(obj, where, ("premise", "hypothesis"), CB_LABELS)]


def norm_boolq(obj: dict[str, Any], where: str) -> list[Record]:
    return [_record(obj, where, ("passage", "question"), BINARY)]


def norm_wic(obj: dict[str, Any], where: str) -> list[Record]:
    return [_record(obj, where, ("word", "sentence1", "sentence2"), BINARY)]


def norm_copa(obj: dict[str, Any], where: str) -> list[Record]:
    question = need(obj, "question", where, str)
    if question not in ("cause", "effect"):
        raise ZofoError(f"{where}: COPA question {question!r}", "it must be 'cause' or 'effect'")
    return [_record(obj, where, ("premise", "choice1", "choice2"), {0: 0, 1: 1}, question=question)]


def norm_wsc(obj: dict[str, Any], where: str) -> list[Record]:
    """Official WSC nests the spans under "target"; the hub's copy has them at top level."""
    spans = obj["target"] if isinstance(obj.get("target"), dict) else obj
    extra = {key: need(spans, key, where, str) for key in ("span1_text", "span2_text")}
    return [_record(obj, where, ("text",), BINARY, **extra)]


def norm_multirc(obj: dict[str, Any], where: str) -> list[Record]:
    """Official MultiRC nests passage -> questions -> answers: one record per (question, answer)."""
    if "paragraph" in obj:  # the hub's flat form
        return [_record(obj, where, ("paragraph", "question", "answer"), BINARY)]
    passage = need(obj, "passage", where, dict)
    paragraph = need(passage, "text", where, str)
    records = []
    for question in need(passage, "questions", where, list):
        text = need(question, "question", where, str)
        for answer in need(question, "answers", where, list):
            label = lookup_label(BINARY, need(answer, "label", where), where)
            fields = {"paragraph": paragraph, "question": text, "answer": need(answer, "text", where, str)}
            records.append(Record({**fields, "label": label}, where))
    return records


def read_jsonl(path: Path, normalize: Normalize) -> list[Record]:
    """Every record of one jsonl file, normalised; errors carry `file:line`."""
    return [record for where, obj in iter_jsonl(path) for record in normalize(obj, where)]


def folder_reader(normalize: Normalize, files: dict[str, str] = FILES) -> Callable[[Path], Pools]:
    """A reader for a SuperGLUE-layout folder (pool -> file stem), or for one jsonl file."""

    def read(path: Path) -> Pools:
        if path.is_file():
            return {"train": read_jsonl(path, normalize)}
        if not path.is_dir():
            raise ZofoError(f"data path {path} does not exist", "give a folder or a .jsonl file")
        found = {pool: find_file(path, stem) for pool, stem in files.items()}
        if not any(found.values()):
            stems = ", ".join(f"{s}.jsonl[.gz]" for s in files.values())
            raise ZofoError(f"no SuperGLUE files in {path}", f"expected some of: {stems}")
        return {pool: read_jsonl(file, normalize) for pool, file in found.items() if file}

    return read


def _register(name: str, normalize: Normalize, hub_config: str) -> None:
    TASKS.register(name)(TaskSpec(
        name=name, templates=TEMPLATES[name], read=folder_reader(normalize),
        hub=hub_reader("aps/super_glue", hub_config, normalize),
        protocol="SuperGLUE: train.jsonl=train pool, dev32.jsonl=dev pool, val.jsonl=test pool",
    ))


for _name, _normalize in [("rte", norm_rte), ("cb", norm_cb), ("boolq", norm_boolq), ("wic", norm_wic),
                          ("wsc", norm_wsc), ("multirc", norm_multirc), ("copa", norm_copa)]:
    _register(_name, _normalize, "wsc.fixed" if _name == "wsc" else _name)
