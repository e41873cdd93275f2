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

from zofo.evaluation.scoring import CandidateBatch, candidate_scores, token_logprobs
from zofo.registry import Registry

Objective = Callable[[object, CandidateBatch], Tensor]
OBJECTIVES: Registry[Objective] = Registry("objective")


@OBJECTIVES.register("ce")
def candidate_cross_entropy(model, batch: CandidateBatch) -> Tensor:
    """mean_i -log softmax(scores_i)[label_i] over the examples of the batch."""
    return F.cross_entropy(candidate_scores(model, batch), batch.labels)


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


__all__ = ["OBJECTIVES", "answer_lm_loss", "candidate_cross_entropy", "gold_rows"]
