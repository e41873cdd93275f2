"""Fixed-shape candidate batches: what a CUDA graph can replay (no data-dependent shapes, no host sync).

A `CandidateBatch` has one row per (example, candidate) that exists, as wide as its longest row, and its
scores need `nonzero`. A `StaticBatch` lays the same rows out on a grid of examples x candidates (a missing
candidate is an empty row), right-padded to a width bucket, with each row's answer tokens gathered into a
bucketed number of columns. The shape is a function of the batch alone (so a resumed run replays the same
graphs), and a task's steps fall into a handful of shapes, each captured once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from zofo.evaluation.head import log_probs, logits_at
from zofo.evaluation.objectives import example_losses
from zofo.evaluation.scoring import CandidateBatch
from zofo.models.attention import unpacked_causal


@dataclass
class StaticBatch:
    """Rows example-major (row = example * candidates + candidate); `answer_*` columns index answer tokens."""

    input_ids: Tensor        # [rows, width], right-padded
    answer_cols: Tensor      # [rows, answer]: the position whose logits predict answer token a
    answer_ids: Tensor       # [rows, answer]: answer token a
    answer_mask: Tensor      # [rows, answer] float32: 1 where answer token a exists
    candidate_mask: Tensor   # [examples, candidates] bool: the candidate exists
    labels: Tensor           # [examples]

    @property
    def shape(self) -> tuple[int, ...]:
        """(examples, candidates, width, answer): what a captured graph is keyed by."""
        return (*self.candidate_mask.shape, self.input_ids.shape[1], self.answer_ids.shape[1])

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def to_static(batch: CandidateBatch, width_multiple: int = 64, answer_multiple: int = 8) -> StaticBatch:
    """`batch` on the grid, its width rounded up to `width_multiple` and its answer columns to
    `answer_multiple`; no host sync when the batch carries its longest answer and most candidates (as
    `encode_candidates` makes it), else one."""
    device = batch.input_ids.device
    rows, width = batch.input_ids.shape
    lengths = batch.attention_mask.sum(1)
    n_answer = batch.target_mask.sum(1)
    if batch.longest_answer is not None and batch.most_candidates is not None:
        longest_answer, n_candidates = batch.longest_answer, batch.most_candidates
    else:
        longest_answer, n_candidates = torch.stack([n_answer.max(), batch.n_candidates.max()]).tolist()
    examples = batch.labels.shape[0]
    grid_width = round_up(width, width_multiple)
    answer = round_up(max(1, longest_answer), answer_multiple)

    grid = batch.row_example * n_candidates + batch.row_candidate
    input_ids = torch.zeros(examples * n_candidates, grid_width, dtype=torch.long, device=device)
    input_ids[grid, :width] = batch.input_ids

    a = torch.arange(answer, device=device)
    start = (lengths - n_answer)[:, None]                  # first answer token of each row
    exists = a[None, :] < n_answer[:, None]
    positions = torch.where(exists, start + a, start)      # a missing column repeats a real token
    answer_ids = torch.zeros(examples * n_candidates, answer, dtype=torch.long, device=device)
    answer_cols = torch.zeros_like(answer_ids)
    answer_mask = torch.zeros(examples * n_candidates, answer, dtype=torch.float32, device=device)
    answer_ids[grid] = batch.input_ids.gather(1, positions)
    answer_cols[grid] = positions - 1
    answer_mask[grid] = exists.float()

    candidate_mask = torch.zeros(examples * n_candidates, dtype=torch.bool, device=device)
    candidate_mask.index_fill_(0, grid, True)  # not `[grid] = True`: that uploads the scalar and waits for the device
    return StaticBatch(input_ids, answer_cols, answer_ids, answer_mask,
                       candidate_mask.view(examples, n_candidates), batch.labels)


def static_scores(model, batch: StaticBatch) -> Tensor:
    """[examples, candidates] mean log-likelihood of each candidate's tokens; -inf where none exists.

    Equal to `candidate_scores` of the same rows: rows are right-padded, so a causal model needs no
    attention mask (no position ever attends to a later one), and SDPA runs with ``is_causal`` even under
    CUDA-graph capture (`causal_attention`). Fixed shapes and no host sync throughout.
    """
    rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device)[:, None]
    with logits_at(model, rows.expand_as(batch.answer_cols), batch.answer_cols, batch.input_ids.shape[1]), \
            unpacked_causal():
        picked = model(input_ids=batch.input_ids, use_cache=False).logits       # [rows, answer, vocab]
    logprobs = log_probs(picked).gather(2, batch.answer_ids[..., None]).squeeze(2)
    means = (logprobs * batch.answer_mask).sum(1) / batch.answer_mask.sum(1).clamp(min=1)
    return means.view(batch.candidate_mask.shape).masked_fill(~batch.candidate_mask, float("-inf"))


def static_losses(model, batch: StaticBatch, objective: str) -> Tensor:
    """[examples] training loss of each example of a fixed-shape batch (`objectives.example_losses`)."""
    return example_losses(static_scores(model, batch), batch.labels, objective)
