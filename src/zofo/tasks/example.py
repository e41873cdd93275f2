"""The unit every task produces: a rendered prompt and the answers that may follow it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One prompted example.

    `prompt` is everything before the answer; each candidate is the exact string appended to it (with
    its leading space, or none when the prompt ends in a newline). Classification and multiple choice
    set `candidates` and `label` (index of the gold candidate); generative tasks leave them empty and
    give the gold strings in `answers`. Cloze tasks with several correct spellings (ReCoRD) may give
    both: `answers` then lists every gold candidate string.
    """

    prompt: str
    candidates: tuple[str, ...]
    label: int | None
    answers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Record:
    """A raw record in a task's canonical field names, with where it came from (`file:line`)."""

    fields: dict[str, Any]
    where: str = field(default="", compare=False)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def join_answer(prompt: str, answer: str) -> str:
    """The candidate string for `answer` after `prompt`: a leading space unless the prompt ends a line."""
    if prompt == "" or prompt.endswith(("\n", " ")):
        return answer.strip()
    return " " + answer.strip()
