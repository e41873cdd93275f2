"""ReCoRD (SuperGLUE cloze over entities): reader of the official jsonl and its templates.

Each query becomes one Example whose candidates are the passage's distinct entity strings; `label`
is the first gold entity and `answers` lists every gold candidate (a prediction is right if it is
any of them). Folder layout as the other SuperGLUE tasks (train/dev32/val.jsonl).
"""

from __future__ import annotations

from typing import Any

from zofo.errors import ZofoError
from zofo.tasks.base import TASKS, TaskSpec
from zofo.tasks.example import Example, Record
from zofo.tasks.hub import hub_reader
from zofo.tasks.io import need
from zofo.tasks.superglue import folder_reader


def _entities(passage: dict[str, Any], text: str, where: str) -> list[str]:
    """Distinct entity strings in order of first mention (official spans have inclusive ends)."""
    spans = need(passage, "entities", where, list)
    names = [text[need(s, "start", where, int): need(s, "end", where, int) + 1] for s in spans]
    return list(dict.fromkeys(name for name in names if name.strip()))


def _query(text: str, entities: list[str], query: str, answers: list[str], where: str) -> Record:
    if not entities:
        raise ZofoError(f"{where}: ReCoRD passage with no entities (no candidates)", "drop that line")
    gold = [e for e in entities if e in answers]
    if not gold:
        raise ZofoError(f"{where}: no answer of query {query[:40]!r} is among the passage entities",
                        "check the entity spans and answers of that line")
    return Record({"passage": text, "query": query, "entities": entities, "gold": gold}, where)


def norm_record(obj: dict[str, Any], where: str) -> list[Record]:
    """One record per query of an official ReCoRD line (or of a flat hub row)."""
    if isinstance(obj.get("passage"), str):  # the hub's flat form: passage, query, entities, answers
        text = obj["passage"]
        entities = list(dict.fromkeys(need(obj, "entities", where, list)))
        queries = [(need(obj, "query", where, str), list(need(obj, "answers", where, list)))]
    else:
        passage = need(obj, "passage", where, dict)
        text = need(passage, "text", where, str)
        entities = _entities(passage, text, where)
        queries = [(need(qa, "query", where, str), [need(a, "text", where, str)
                                                     for a in need(qa, "answers", where, list)])
                   for qa in need(obj, "qas", where, list)]
    return [_query(text, entities, query, answers, where) for query, answers in queries]


def _cloze(r: Record, candidates: tuple[str, ...], prompt: str) -> Example:
    gold = tuple(c for c, e in zip(candidates, r["entities"], strict=True) if e in r["gold"])
    return Example(prompt, candidates, candidates.index(gold[0]), gold)


def record_mezo(r: Record) -> Example:
    prompt = f'{r["passage"]}\n{r["query"]}\nQuestion: what is the "@placeholder"\nAnswer:'
    return _cloze(r, tuple(" " + e for e in r["entities"]), prompt)


def record_gpt3(r: Record) -> Example:
    prompt = r["passage"].replace("@highlight\n", "- ") + "\n-"
    return _cloze(r, tuple(" " + r["query"].replace("@placeholder", e) for e in r["entities"]), prompt)


TASKS.register("record")(TaskSpec(
    name="record", templates={"mezo": record_mezo, "gpt3": record_gpt3}, read=folder_reader(norm_record),
    hub=hub_reader("aps/super_glue", "record", norm_record),
    protocol="SuperGLUE: train.jsonl=train pool, dev32.jsonl=dev pool, val.jsonl=test pool",
))
