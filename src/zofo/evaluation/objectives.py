"""Training losses as pure functions (model, CandidateBatch) -> scalar tensor; chosen by name.

- "ce": cross-entropy over the candidates' mean log-likelihood scores against the gold label
  (the scores act as logits; candidates an example lacks are -inf and get zero probability).
- "lm": the usual causal LM loss, but only on the gold candidate's tokens (mean over those tokens);
  only the gold rows of the batch go through the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from zofo.errors import ZofoError
from zofo.evaluation.head import widened
from zofo.evaluation.scoring import CandidateBatch, candidate_scores, token_logprobs
from zofo.registry import Registry

Objective = Callable[[object, CandidateBatch], Tensor]
OBJECTIVES: Registry[Objective] = Registry("objective")


def example_losses(scores: Tensor, labels: Tensor, objective: str) -> Tensor:
    """Per-example training loss from candidate scores [n, max_candidates] (mean log-likelihoods).

    ce: cross-entropy over the candidates' scores; lm: negative mean log-likelihood of the gold answer's
    tokens, per example (the training loop averages examples, so one forward can serve several batches:
    `methods.base.split_losses`; `answer_lm_loss` below averages tokens instead).
    """
    if objective == "ce":
        return F.cross_entropy(widened(scores), labels, reduction="none")
    if objective == "lm":
        return -widened(scores).gather(1, labels[:, None]).squeeze(1)
    raise ZofoError(f"unknown objective {objective!r}", "use ce or lm")


@OBJECTIVES.register("ce")
def candidate_cross_entropy(model, batch: CandidateBatch) -> Tensor:
    """mean_i -log softmax(scores_i)[label_i] over the examples of the batch."""
    return example_losses(candidate_scores(model, batch), batch.labels, "ce").mean()


def gold_rows(batch: CandidateBatch) -> CandidateBatch:
    """The rows of `batch` that hold each example's gold candidate (one per example)."""
    keep = batch.row_candidate == batch.labels[batch.row_example]
    return CandidateBatch(batch.input_ids[keep], batch.attention_mask[keep], batch.target_mask[keep],
                          batch.row_example[keep], batch.row_candidate[keep], batch.labels,
                          batch.n_candidates)


@OBJECTIVES.register("lm")
def answer_lm_loss(model, batch: CandidateBatch) -> Tensor:
    """-mean log p(token) over the tokens of every example's gold candidate."""
    logprobs, _ = token_logprobs(model, gold_rows(batch))
    return -logprobs.mean()


__all__ = ["OBJECTIVES", "answer_lm_loss", "candidate_cross_entropy", "example_losses", "gold_rows"]
