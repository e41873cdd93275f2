"""Logits only where a score needs them: the output projection applied to the gathered positions alone.

Scoring a candidate needs the logits at its few answer positions, but a causal LM computes them at every
position: [rows, seq_len, vocab] floats (SmolLM2: 49152 per position; about 1.6 GB in float32 for 32 rows
of 256 tokens) and a fifth of the forward's FLOPs. `logits_at` gathers the final hidden states at the
wanted positions just before the output projection (a forward pre-hook on it), so the model returns
logits for those positions only. The projection still runs inside its own module, so ZO probes (which
perturb its weight in that module's hooks) and tied embeddings see exactly what they would otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def output_projection(model: nn.Module | functools.partial) -> nn.Module:
    """The module that maps final hidden states to logits (peft wrappers included; a `functools.partial`
    of a model, such as bilevel's forward with per-row adapters, counts as that model)."""
    if isinstance(model, functools.partial):
        model = model.func
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head) to gather logits from; "
                         "score with a causal LM (AutoModelForCausalLM), not a bare backbone")
    return head


@contextmanager
def logits_at(model: nn.Module, rows: Tensor, cols: Tensor, seq_len: int) -> Iterator[None]:
    """Within the block, `model(...).logits` is `full_logits[rows, cols]` (any index shape, then vocab).

    `cols` index the last `seq_len` positions of the hidden states (prompt tuning prepends virtual tokens).
    """

    def gather(module: nn.Module, args: tuple) -> tuple:
        hidden, *rest = args
        offset = hidden.shape[1] - seq_len
        return (hidden[rows, cols + offset], *rest)

    handle = output_projection(model).register_forward_pre_hook(gather, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def widened(t: Tensor) -> Tensor:
    """``t`` in float32 at least: bf16 / fp16 values are widened, float64 ones (a float64 model, as the tests that
    check against an independent computation run) keep their precision."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def log_probs(logits: Tensor) -> Tensor:
    """log_softmax over the vocabulary, in float32 at least (`widened`)."""
    return widened(logits).log_softmax(-1)
