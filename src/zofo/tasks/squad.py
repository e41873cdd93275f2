"""Generative reading comprehension: SQuAD (official json) and DROP (official json), "Answer:" prompts.

Both are scored by greedy generation, SQuAD-normalised F1 and exact match (max over gold answers).
Locations in errors are JSON paths (`file: data[3].paragraphs[0].qas[2]`): these files are one JSON
document, often a single line. Local data: one json file (pool "train"), or a folder whose files with
"train" in the name form the train pool and those with "dev"/"val" the test pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zofo.errors import ZofoError
from zofo.tasks.base import TASKS, Pools, TaskSpec
from zofo.tasks.example import Example, Record
from zofo.tasks.hub import hub_reader
from zofo.tasks.io import need, read_json


def _qa(context: str, question: str, answers: list[str], where: str, title: str = "") -> Record:
    answers = list(dict.fromkeys(a.strip() for a in answers if a.strip()))
    if not answers:
        raise ZofoError(f"{where}: question with no gold answer", "give at least one answer text")
    return Record({"title": title, "context": context, "question": question, "answers": answers}, where)


def norm_squad_row(row: dict[str, Any], where: str) -> list[Record]:
    """A flat hub row: title, context, question, answers {text: [...]}."""
    texts = need(need(row, "answers", where, dict), "text", where, list)
    return [_qa(row["context"], row["question"], texts, where, row.get("title", ""))]


def iter_squad(doc: Any, path: Path) -> Iterator[Record]:
    """Records of an official SQuAD file; SQuAD 2.0's unanswerable questions are skipped."""
    for i, article in enumerate(need(doc, "data", str(path), list)):
        for j, paragraph in enumerate(need(article, "paragraphs", f"{path}: data[{i}]", list)):
            where = f"{path}: data[{i}].paragraphs[{j}]"
            context = need(paragraph, "context", where, str)
            for k, qa in enumerate(need(paragraph, "qas", where, list)):
                if qa.get("is_impossible"):
                    continue
                at = f"{where}.qas[{k}]"
                texts = [need(a, "text", at, str) for a in need(qa, "answers", at, list)]
                yield _qa(context, need(qa, "question", at, str), texts, at, article.get("title", ""))


def _drop_texts(answer: dict[str, Any]) -> list[str]:
    """Gold strings of one DROP answer: the number, the date, or each span (each span counts as a gold)."""
    if str(answer.get("number", "")).strip():
        return [str(answer["number"])]
    date = answer.get("date") or {}
    joined = " ".join(str(date.get(k, "")) for k in ("day", "month", "year") if str(date.get(k, "")).strip())
    return [joined] if joined else list(answer.get("spans") or [])


def iter_drop(doc: Any, path: Path) -> Iterator[Record]:
    """Records of an official DROP file: {passage_id: {passage, qa_pairs: [{question, answer, ...}]}}."""
    if not isinstance(doc, dict):
        raise ZofoError(f"{path}: a DROP file is a JSON object of passages", "use the official DROP json")
    for pid, item in doc.items():
        passage = need(item, "passage", f"{path}: {pid}", str)
        for k, qa in enumerate(need(item, "qa_pairs", f"{path}: {pid}", list)):
            at = f"{path}: {pid}.qa_pairs[{k}]"
            golds = [need(qa, "answer", at, dict), *qa.get("validated_answers", [])]
            texts = [text for gold in golds for text in _drop_texts(gold)]
            yield _qa(passage, need(qa, "question", at, str), texts, at)


def norm_drop_row(row: dict[str, Any], where: str) -> list[Record]:
    """A flat hub row (ucinlp/drop): passage, question, answers_spans {spans: [...]}."""
    spans = need(need(row, "answers_spans", where, dict), "spans", where, list)
    return [_qa(row["passage"], row["question"], spans, where)]


def _pool_of(name: str) -> str | None:
    if "train" in name:
        return "train"
    return "test" if "dev" in name or "val" in name else None


def json_reader(parse: Callable[[Any, Path], Iterator[Record]]) -> Callable[[Path], Pools]:
    """A reader for one official json file, or a folder of them split by name (train / dev|val)."""

    def read(path: Path) -> Pools:
        if path.is_file():
            return {"train": list(parse(read_json(path), path))}
        files = sorted(path.glob("*.json*")) if path.is_dir() else []
        pools: Pools = {"train": [], "test": []}
        for file in files:
            pool = _pool_of(file.name)
            if pool and file.name.endswith((".json", ".json.gz")):
                pools[pool].extend(parse(read_json(file), file))
        if not any(pools.values()):
            raise ZofoError(f"no train/dev json files at {path}", "give a json file or a folder with them")
        return pools

    return read


def _generate(prompt: str, r: Record) -> Example:
    return Example(prompt, (), None, tuple(r["answers"]))


def squad_mezo(r: Record) -> Example:
    return _generate(f'Title: {r["title"]}\nContext: {r["context"]}\nQuestion: {r["question"]}\nAnswer:', r)


def drop_mezo(r: Record) -> Example:
    return _generate(f'Passage: {r["context"]}\nQuestion: {r["question"]}\nAnswer:', r)


def qa_plain(r: Record) -> Example:
    return _generate(f'{r["context"]}\nQ: {r["question"]}\nA:', r)


TASKS.register("squad")(TaskSpec(
    name="squad", templates={"mezo": squad_mezo, "plain": qa_plain}, read=json_reader(iter_squad),
    generative=True, hub=hub_reader("rajpurkar/squad", None, norm_squad_row),
    protocol="SQuAD json: *train*.json=train pool, *dev*.json=test pool",
))
TASKS.register("drop")(TaskSpec(
    name="drop", templates={"mezo": drop_mezo, "plain": qa_plain}, read=json_reader(iter_drop),
    generative=True, hub=hub_reader("ucinlp/drop", None, norm_drop_row),
    protocol="DROP json: *train*.json=train pool, *dev*.json=test pool",
))
