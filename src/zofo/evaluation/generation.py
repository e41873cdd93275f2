"""Greedy generation for generative tasks: batched, left-padded, stopped at the first newline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from zofo.evaluation.scoring import evaluation_batches
from zofo.stop import StopRequest


class StopAtNewline(StoppingCriteria):
    """Per row: done once the text generated after the prompt contains a newline."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor(["\n" in text for text in texts], device=input_ids.device)


def _generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int, max_length: int) -> list[str]:
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True,
                           max_length=max_length - max_new_tokens)
    finally:
        tokenizer.padding_side = side
    inputs = inputs.to(next(model.parameters()).device)
    width = inputs["input_ids"].shape[1]
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id,
                            stopping_criteria=StoppingCriteriaList([StopAtNewline(tokenizer, width)]))
    texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [text.split("\n", 1)[0].strip() for text in texts]


def generate_answers(model, tokenizer, prompts: Sequence[str], batch_size: int = 16, max_new_tokens: int = 50,
                     max_length: int = 2048, progress: bool = True, stop: StopRequest | None = None) -> list[str]:
    """Greedy completions of each prompt up to the first newline (stripped), in order. A requested ``stop``
    raises `EvaluationStopped` between batches."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.truncation_side = "left"
    answers: list[str] = []
    for part in evaluation_batches(model, len(prompts), batch_size, progress, "generating", stop):
        answers.extend(_generate_batch(model, tokenizer, list(prompts[part]), max_new_tokens, max_length))
    return answers
