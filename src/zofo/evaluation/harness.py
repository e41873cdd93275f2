"""evaluate(): zero-shot or in-context (k demonstrations) accuracy, or F1 / EM for generative tasks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from zofo.errors import ZofoError
from zofo.evaluation.generation import generate_answers
from zofo.evaluation.limits import MAX_TOKENS
from zofo.evaluation.metrics import argmax, chosen_answer, exact_match, f1_score, is_correct, macro_f1
from zofo.evaluation.scoring import example_candidates, score_examples
from zofo.ranks import Ranks
from zofo.stop import StopRequest
from zofo.tasks.example import Example

DEMO_SEPARATOR = "\n\n"


def icl_demonstrations(train: list[Example], k: int, seed: int) -> list[Example]:
    """k demonstrations drawn from `train` without replacement with the seed (all of them if fewer)."""
    if k < 0:
        raise ZofoError(f"--shots {k} is negative", "give 0 (zero-shot) or more")
    return random.Random(seed).sample(list(train), min(k, len(train)))


def demonstration_text(example: Example) -> str:
    """A solved example: the prompt followed by its gold candidate (or first gold answer)."""
    candidates, label = example_candidates(example)
    return example.prompt + candidates[label]


def with_demonstrations(examples: Sequence[Example],
                        demonstrations: Sequence[Example] | None) -> list[Example]:
    """Each example with the solved demonstrations before it, joined by blank lines."""
    if not demonstrations:
        return list(examples)
    prefix = "".join(demonstration_text(demo) + DEMO_SEPARATOR for demo in demonstrations)
    return [replace(example, prompt=prefix + example.prompt) for example in examples]


def _classify(model, tokenizer, examples: list[Example], batch_size: int, max_length: int,
              progress: bool, stop: StopRequest | None, extra: tuple[str, ...] = (), ranks: Ranks | None = None,
              max_tokens: int | None = MAX_TOKENS) -> dict:
    ranks = ranks or Ranks()
    mine = ranks.share(examples)
    scores = score_examples(model, tokenizer, mine, batch_size, max_length, progress, stop,
                            max_tokens) if mine else []
    predicted = ranks.unshare([argmax(row) for row in scores])
    correct = [is_correct(example, p) for example, p in zip(examples, predicted, strict=True)]
    result = {"accuracy": sum(correct) / len(correct)}
    if "macro_f1" in extra:
        result["macro_f1"] = macro_f1([chosen_answer(e, e.label) for e in examples],
                                      [chosen_answer(e, p) for e, p in zip(examples, predicted, strict=True)])
    return result | {"n": len(correct)}


def _generate(model, tokenizer, examples: list[Example], batch_size: int, max_length: int,
              progress: bool, stop: StopRequest | None, ranks: Ranks | None = None) -> dict:
    ranks = ranks or Ranks()
    prompts = ranks.share([e.prompt for e in examples])
    mine = generate_answers(model, tokenizer, prompts, batch_size, max_length=max_length, progress=progress,
                            stop=stop) if prompts else []
    predictions = ranks.unshare(mine)
    f1 = [f1_score(p, e.answers) for p, e in zip(predictions, examples, strict=True)]
    em = [exact_match(p, e.answers) for p, e in zip(predictions, examples, strict=True)]
    return {"f1": sum(f1) / len(f1), "exact_match": sum(em) / len(em), "n": len(f1)}


def evaluate(model, tokenizer, task, examples: Sequence[Example], *, batch_size: int = 32,
             demonstrations: Sequence[Example] | None = None, progress: bool = True,
             max_length: int = 2048, stop: StopRequest | None = None, ranks: Ranks | None = None,
             max_tokens: int | None = MAX_TOKENS) -> dict:
    """Metrics of `model` on `examples`: {"accuracy", "n"} or {"f1", "exact_match", "n"}, plus the metrics the
    task asks for besides (`task.metrics`: macro_f1 for some BIG-bench tasks).

    Classification scores every candidate by its mean token log-likelihood and predicts the argmax;
    generative tasks (task.generative, or examples without candidates when task is None) decode
    greedily to the first newline. `demonstrations` (ICL) are prepended to every prompt. A requested ``stop``
    ends the evaluation between two batches (`zofo.stop.EvaluationStopped`), so that a signal does not wait
    for a long evaluation to end. ``ranks`` (data parallelism): each rank takes every world-th example and the
    predictions are gathered, so every rank returns the metrics of all the examples. ``max_tokens`` bounds the
    tokens of one scoring forward (rows x padded width: a batch is cut into pieces of whole examples, which cannot
    change a score), so that memory does not follow prompt lengths and numbers of candidates; generation ignores it.
    """
    if not examples:
        raise ZofoError("no examples to evaluate", "check the task data and --n-test")
    generative = task.generative if task is not None else not examples[0].candidates
    prompted = with_demonstrations(examples, demonstrations)
    if generative:
        return _generate(model, tokenizer, prompted, batch_size, max_length, progress, stop, ranks)
    extra = tuple(getattr(task, "metrics", ()))
    return _classify(model, tokenizer, prompted, batch_size, max_length, progress, stop, extra, ranks, max_tokens)
