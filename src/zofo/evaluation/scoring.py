"""Candidate scoring: the mean log-likelihood of each candidate's tokens after its prompt.

All candidates of many examples go through one forward: one row per (example, candidate), right-padded
(a causal model never attends to later positions, so right padding cannot change a score). Where an example's rows
repeat a long prompt, the prompt runs once per example instead (`shared_prompt_logits`): its keys and values are
cached, copied to each of the example's rows, and only the rows' own tokens run again. Where every row of a batch
begins alike (in-context learning's demonstrations), that common start runs once for the whole batch before the
examples' own starts. The same scores, to float rounding, from far fewer tokens: a 10-choice task's rows cost about a
tenth, and 16 demonstrations run once for 32 examples instead of 32 times.
"""

from __future__ import annotations

import collections
import functools
import inspect
import itertools
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from tqdm.auto import tqdm

from zofo.errors import ZofoError
from zofo.evaluation.head import log_probs, logits_at
from zofo.evaluation.limits import MAX_TOKENS
from zofo.models.device import upload
from zofo.models.work import uncounted
from zofo.stop import StopRequest, check_stop
from zofo.tasks.example import Example, join_answer

# A batch's prompts run once per example (`shared_prompt_logits`) when its rows hold at least SHARE_MIN_TOKENS
# tokens and sharing leaves at most SHARE_LEFT of them; below that a small model's forward is bound by its launches,
# which a second forward (the prompts') would double. 2**13 lets the k-shot runs' pieces of 64 rows share
# (benchmarks/shared_prompts.py). Measured on one H100 for a meta-test unit (docs/RESULTS.md section 22): ICL scoring
# 2.15x and zero-shot 1.7x faster, the k-shot run's eager steps 1.09x; the threshold itself was not tuned.
SHARE_MIN_TOKENS = 2**13
SHARE_LEFT = 0.5
# The batch's common start runs once (`common_start`) when that saves at least COMMON_MIN_TOKENS tokens: one forward
# more, worth it, by the same reasoning, only past a forward's launch-bound size.
COMMON_MIN_TOKENS = SHARE_MIN_TOKENS
#: the model families whose cached forward is tested against one row per candidate (tests/evaluation/
#: test_shared_prompts.py); any other family scores one row per candidate
SHARE_FAMILIES = ("llama", "qwen2", "opt", "gpt2")


@dataclass
class CandidateBatch:
    """Rows of (example, candidate) token ids; `target_mask` marks the candidate's tokens."""

    input_ids: Tensor
    attention_mask: Tensor
    target_mask: Tensor
    row_example: Tensor
    row_candidate: Tensor
    labels: Tensor
    n_candidates: Tensor
    longest_answer: int | None = None   # host copies of max(candidate tokens) and max(n_candidates), so that
    most_candidates: int | None = None  # a fixed-shape layout needs no device sync (None: not known)
    shared: tuple[int, ...] | None = None  # host: per example, the tokens all its rows begin with (each row's
    own: tuple[int, ...] | None = None     # tokens from its position before the first candidate token); per
                                           # row, its tokens after them (None: not known, never shared)
    common: int = 0  # host: the tokens every row begins with, at most every example's shared start

    def to(self, device: torch.device | str) -> CandidateBatch:
        """On `device`, without making the host wait for it (`transfer.upload`)."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return CandidateBatch(**{k: upload(v, device) if isinstance(v, Tensor) else v for k, v in moved.items()})


def example_pieces(batch: CandidateBatch, max_rows: int | None,
                   max_tokens: int | None = None) -> list[CandidateBatch]:
    """The batch cut into consecutive pieces of whole examples, each of at most `max_rows` rows and of at most
    `max_tokens` tokens (rows x the piece's longest row), each piece's padding trimmed to its longest row; an
    example that alone exceeds a bound is a piece of its own. Both None: the batch itself.

    A batch is examples x candidates rows, so its memory follows its tasks' number of candidates and prompt
    lengths; pieces bound it. Greedy in the batch's order: a piece takes the next example while both bounds hold.
    """
    if _fits(*batch.input_ids.shape, max_rows, max_tokens):
        return [batch]
    counts = batch.n_candidates.tolist()
    lengths = batch.attention_mask.sum(dim=1).tolist()
    firsts = [0, *itertools.accumulate(counts)]  # example i's rows are [firsts[i], firsts[i + 1])
    widths = [max(lengths[firsts[i]:firsts[i + 1]]) for i in range(len(counts))]
    pieces, start = [], 0
    while start < len(counts):
        end, width = start + 1, widths[start]
        while end < len(counts) and _fits(firsts[end + 1] - firsts[start], max(width, widths[end]), max_rows,
                                          max_tokens):
            end, width = end + 1, max(width, widths[end])
        pieces.append(_piece(batch, start, end, slice(firsts[start], firsts[end]), width))
        start = end
    return pieces


def _fits(rows: int, width: int, max_rows: int | None, max_tokens: int | None) -> bool:
    return (max_rows is None or rows <= max_rows) and (max_tokens is None or rows * width <= max_tokens)


def _piece(batch: CandidateBatch, start: int, end: int, rows: slice, width: int) -> CandidateBatch:
    """Examples [start, end) of `batch`, whose rows are `rows` (rows come grouped by example, in order), cut to
    `width` columns (their longest row)."""
    return CandidateBatch(batch.input_ids[rows, :width], batch.attention_mask[rows, :width],
                          batch.target_mask[rows, :width], batch.row_example[rows] - start,
                          batch.row_candidate[rows], batch.labels[start:end], batch.n_candidates[start:end],
                          shared=batch.shared[start:end] if batch.shared is not None else None,
                          own=batch.own[rows] if batch.own is not None else None,
                          common=batch.common)  # a piece's rows begin alike at least as far as the batch's


def example_candidates(example: Example) -> tuple[tuple[str, ...], int]:
    """(candidates, gold index); a generative example is scored on its first gold answer."""
    if example.candidates:
        return example.candidates, example.label if example.label is not None else -1
    if example.answers:
        return (join_answer(example.prompt, example.answers[0]),), 0
    raise ZofoError(f"example has neither candidates nor answers: {example.prompt[:60]!r}",
                    "every example needs candidates (classification) or answers (generation)")


def _context_ids(tokenizer) -> list[int]:
    """One token to condition on when a prompt is empty: BOS, else EOS."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ZofoError("empty prompt and the tokenizer has no BOS/EOS token", "give the examples a prompt")
    return [token]


def split_tokens(tokenizer, prompt: str, candidate: str) -> tuple[list[int], list[int]]:
    """(context ids, candidate ids): tokenize prompt+candidate together and cut where it stops
    matching the prompt's own tokens, so a BPE merge across the boundary counts as candidate."""
    alone = tokenizer(prompt)["input_ids"] if prompt else []
    return _split_ids(tokenizer, tokenizer(prompt + candidate)["input_ids"], alone)


def _split_ids(tokenizer, full: list[int], alone: list[int]) -> tuple[list[int], list[int]]:
    """`split_tokens` on ids already tokenized: prompt+candidate (`full`) and the prompt alone."""
    common = min(_prefix_length(full, alone), len(full) - 1)  # at least one candidate token
    context, answer = full[:common], full[common:]
    return (context or _context_ids(tokenizer)), answer


#: Rows = per candidate, (ids, n candidate tokens)
Rows = tuple[tuple[tuple[int, ...], int], ...]


class _RowCache:
    """Each example's rows (`_cut_rows`) by (tokenizer, prompt, candidates, max_length), the least recently used
    dropped past `tokens` cached tokens (2**24 by default: a few hundred MB of host memory, every training set of the
    studies many times over, but bounded where 2,000-token ICL rows pass through once each); the examples of a batch
    that are not cached yet are tokenized in one call (`rows`).

    Cached: training draws the same examples epoch after epoch, and tokenizing a batch of 16 again took 6-32
    ms of host time on a 2-core CPU (SST-2 to BoolQ), against 0.3-1.2 ms from the cache
    (benchmarks/encode_batches.py) and a 19.5 ms graphed SmolLM2 training step on the GPU. One call for the batch:
    a fast tokenizer encodes a list of texts on all the host's cores, and each prompt is tokenized alone once, not
    once per candidate; ICL prompts of 2,000 tokens made tokenizing most of a meta-test's ICL scoring on the host
    (benchmarks/results/cpu-2026-12-07/icl-common-start/)."""

    def __init__(self, tokens: int = 1 << 24):
        self.budget, self.tokens, self.kept, self.lock = tokens, 0, collections.OrderedDict(), threading.Lock()

    def rows(self, tokenizer, examples: Sequence[Example], max_length: int) -> list[Rows]:
        keys = [(tokenizer, example.prompt, example_candidates(example)[0], max_length) for example in examples]
        unique = list(dict.fromkeys(keys))
        # training threads sharing a process (`train_together`) share the cache: the hits are copied under the lock,
        # so that another thread's evictions while this one tokenizes cannot take them away
        with self.lock:
            found = {key: self.kept[key] for key in unique if key in self.kept}
        new = [key for key in unique if key not in found]
        found |= dict(zip(new, _tokenized_rows(tokenizer, [key[1:3] for key in new], max_length), strict=True))
        with self.lock:
            for key in unique:
                if key not in self.kept:
                    self.tokens += _row_tokens(found[key])
                self.kept[key] = found[key]
                self.kept.move_to_end(key)
            while self.tokens > self.budget:
                self.tokens -= _row_tokens(self.kept.popitem(last=False)[1])
        return [found[key] for key in keys]

    def clear(self) -> None:
        with self.lock:
            self.kept.clear()
            self.tokens = 0


def _row_tokens(rows: Rows) -> int:
    return sum(len(ids) for ids, _ in rows)


_ROWS = _RowCache()


def _tokenized_rows(tokenizer, examples: list[tuple[str, tuple[str, ...]]], max_length: int) -> list[Rows]:
    """Each (prompt, candidates)'s rows (`_cut_rows`), every text tokenized in one call: each prompt with each of its
    candidates, then each non-empty prompt alone."""
    if not examples:
        return []
    joined = [prompt + candidate for prompt, candidates in examples for candidate in candidates]
    ids = tokenizer(joined + [prompt for prompt, _ in examples if prompt])["input_ids"]
    fulls, alones = iter(ids[:len(joined)]), iter(ids[len(joined):])
    rows = []
    for prompt, candidates in examples:
        full = [next(fulls) for _ in candidates]
        alone = next(alones) if prompt else []
        rows.append(_cut_rows([_split_ids(tokenizer, ids, alone) for ids in full], max_length))
    return rows


def _cut_rows(split: list[tuple[list[int], list[int]]], max_length: int) -> Rows:
    """Per candidate, (ids, n candidate tokens), from each candidate's (context, answer). The prompt is cut once,
    from the left, so that the example's longest row fits max_length: every candidate is scored after the same
    context, and the rows begin alike (what `shared_prompt_logits` shares). A row keeps at least one context token."""
    drop = max(0, max(len(context) + len(answer) for context, answer in split) - max_length)
    return tuple((tuple(context[min(drop, len(context) - 1):] + answer), len(answer)) for context, answer in split)


def _long(values: list[int]) -> Tensor:
    return torch.tensor(values, dtype=torch.long)


def encode_candidates(tokenizer, examples: Sequence[Example], max_length: int = 512) -> CandidateBatch:
    """One right-padded row per (example, candidate); each example's prompt left-truncated once (`_cut_rows`),
    candidates always kept."""
    if not examples:
        raise ZofoError("encode_candidates: no examples to encode", "pass at least one example")
    rows, lengths, row_example, row_candidate, labels, counts, shared = [], [], [], [], [], [], []
    for i, (example, example_rows) in enumerate(zip(examples, _ROWS.rows(tokenizer, examples, max_length),
                                                    strict=True)):
        candidates, label = example_candidates(example)
        for j, (ids, n_answer) in enumerate(example_rows):
            rows.append(ids)
            lengths.append(n_answer)
            row_example.append(i)
            row_candidate.append(j)
        labels.append(label)
        counts.append(len(candidates))
        shared.append(_shared_start(rows[-len(candidates):], lengths[-len(candidates):]))
    width = max(len(ids) for ids in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    input_ids = torch.tensor([ids + (pad,) * (width - len(ids)) for ids in rows], dtype=torch.long)
    ends, n_answers = _long([len(ids) for ids in rows])[:, None], _long(lengths)[:, None]
    cols = torch.arange(width)[None, :]
    attention_mask = (cols < ends).long()
    target_mask = ((cols >= ends - n_answers) & (cols < ends)).long()
    own = tuple(len(ids) - shared[i] for ids, i in zip(rows, row_example, strict=True))
    return CandidateBatch(input_ids, attention_mask, target_mask, _long(row_example), _long(row_candidate),
                          _long(labels), _long(counts), max(lengths), max(counts), tuple(shared), own,
                          min(_common_length(rows), *shared))


def _common_length(rows: list[tuple[int, ...]]) -> int:
    """How many tokens every row begins with: as many as the lexicographically first and last rows share (any row
    between them shares that start too)."""
    return _prefix_length(min(rows), max(rows))


def _prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens `a` and `b` (both lists or both tuples: slices are compared) begin with alike: one comparison
    where one begins the other (a prompt and the prompt with a candidate, usually), else a bisection on slice
    comparisons, all made in C rather than a walk token by token in Python over 2,000-token ICL rows."""
    lo, hi = 0, min(len(a), len(b))  # a[:lo] == b[:lo], and no common start is longer than hi
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid - 1)
    return lo


def _shared_start(rows: list[tuple[int, ...]], n_answers: list[int]) -> int:
    """The tokens every row of one example begins with, stopping short of the position that predicts a row's first
    candidate token (that position's logits come from the rows' own forward). A boundary BPE merge can make the
    candidates' contexts differ in their last tokens; the start stops at the first difference."""
    limit = min(len(ids) - n for ids, n in zip(rows, n_answers, strict=True)) - 1
    return max(0, min(limit, _common_length(rows)))


def token_logprobs(model, batch: CandidateBatch) -> tuple[Tensor, Tensor]:
    """(log p of each candidate token, its row index): logits and log-softmax only at candidate positions; each
    example's prompt run once when that saves enough (`shares_prompts`)."""
    rows, cols = batch.target_mask[:, 1:].nonzero(as_tuple=True)  # token cols+1 is predicted at cols
    if shares_prompts(model, batch):
        picked = shared_prompt_logits(model, batch, rows, cols)
    else:
        with logits_at(model, rows, cols, batch.input_ids.shape[1]):
            picked = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    picked = log_probs(picked)
    targets = batch.input_ids[rows, cols + 1]
    return picked.gather(1, targets[:, None]).squeeze(1), rows


def shares_prompts(model, batch: CandidateBatch) -> bool:
    """Whether `token_logprobs` runs each example's prompt once: the batch's layout pays for it
    (`sharing_pays`) and the model can take it (`_takes_shared_prompts`)."""
    return sharing_pays(batch) and _takes_shared_prompts(model)


def sharing_pays(batch: CandidateBatch) -> bool:
    """The batch's layout is known on the host, every example shares at least one token, the rows hold at least
    SHARE_MIN_TOKENS tokens and sharing leaves at most SHARE_LEFT of them (`shared_tokens`)."""
    if batch.shared is None or batch.own is None or not batch.shared or min(batch.shared) < 1:
        return False
    whole = batch.input_ids.shape[0] * batch.input_ids.shape[1]
    return whole >= SHARE_MIN_TOKENS and shared_tokens(batch) <= SHARE_LEFT * whole


def shared_tokens(batch: CandidateBatch) -> int:
    """Tokens the shared forwards run: the batch's common start once (where `common_start` runs it), the examples'
    starts after it at their longest, then every row's own part at its longest (against rows x width for one row per
    candidate)."""
    common = common_start(batch)
    return common + len(batch.shared) * (max(batch.shared) - common) + batch.input_ids.shape[0] * max(batch.own)


def common_start(batch: CandidateBatch) -> int:
    """The tokens `shared_prompt_logits` runs once for the whole batch: its common start where running it once
    saves at least COMMON_MIN_TOKENS tokens, else none (0)."""
    n_examples = len(batch.shared) if batch.shared is not None else 0
    return batch.common if (n_examples - 1) * batch.common >= COMMON_MIN_TOKENS else 0


def _takes_shared_prompts(model) -> bool:
    """A family in SHARE_FAMILIES with full attention everywhere (no sliding window), and none of: prompt-learning
    PEFT (its virtual tokens or keys would be prepended twice), a `functools.partial` (per-row forward arguments,
    such as bilevel's adapter per row), gradient checkpointing (it drops the cache), an FSDP-sharded backbone
    (each forward all-gathers every layer, and ranks deciding apart on their own rows would pair unmatched
    all-gathers)."""
    if isinstance(model, functools.partial) or _prompt_learning(model):
        return False
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SHARE_FAMILIES or getattr(config, "use_sliding_window", False):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    return not any(getattr(m, "gradient_checkpointing", False) or _sharded(m) for m in model.modules())


def _sharded(module: torch.nn.Module) -> bool:
    """Whether FSDP2's `fully_shard` sharded this module (it makes the module an `FSDPModule`)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # never imported: nothing is sharded
    return fsdp is not None and isinstance(module, fsdp.FSDPModule)


def _prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def shared_prompt_logits(model, batch: CandidateBatch, rows: Tensor, cols: Tensor) -> Tensor:
    """The logits at (rows, cols) of the rows' full forward, with each example's shared start
    (`CandidateBatch.shared`) run once: one forward of the examples' starts (right-padded, no logits) fills a
    key/value cache, the cache is copied to each example's rows, and one forward of the rows' own tokens (at their
    true positions, attending to their example's start) gives the logits. Where the batch's common start pays
    (`common_start`), it runs first, once, and its cache is copied to every example before their starts run on. The
    same attention as the rows' full forward, so the same logits to float rounding, and differentiable like it."""
    device, width = batch.input_ids.device, batch.input_ids.shape[1]
    shared = upload(torch.tensor(batch.shared, dtype=torch.long), device)
    start_width, own_width = max(batch.shared), max(batch.own)
    firsts = torch.cumsum(batch.n_candidates, 0) - batch.n_candidates  # each example's first row
    starts_mask = (torch.arange(start_width, device=device)[None, :] < shared[:, None]).long()
    keyword = _cache_keyword(model)
    common = common_start(batch)
    cache = None
    if common:
        cache = _fill_cache(model, keyword, batch.input_ids[:1, :common], starts_mask[:1, :common])
        cache.reorder_cache(torch.zeros(len(batch.shared), dtype=torch.long, device=device))  # -> every example
    if start_width > common:
        positions = torch.arange(common, start_width, device=device)[None, :].expand(len(batch.shared), -1)
        cache = _fill_cache(model, keyword, batch.input_ids[firsts, common:start_width], starts_mask, positions,
                            cache)
    cache.reorder_cache(batch.row_example)  # example -> each of its rows
    positions = shared[batch.row_example][:, None] + torch.arange(own_width, device=device)[None, :]
    inside = positions < width
    at = positions.clamp(max=width - 1)  # past a row's end: padding, masked; kept inside a learned position table
    own_mask = batch.attention_mask.gather(1, at) * inside
    with logits_at(model, rows, cols - shared[batch.row_example[rows]], own_width):
        return model(input_ids=batch.input_ids.gather(1, at), position_ids=at,
                     attention_mask=torch.cat([starts_mask[batch.row_example], own_mask], 1),
                     use_cache=True, **{keyword: cache}).logits


def _fill_cache(model, keyword: str, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None,
                cache=None):
    """The key/value cache after `input_ids` (continuing `cache`; `attention_mask` covers the cache and them); no
    logits are computed, and work counts the candidate rows (the rows' forward) alone."""
    nothing = torch.empty(0, dtype=torch.long, device=input_ids.device)
    with logits_at(model, nothing, nothing, input_ids.shape[1]), uncounted():
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                    **({keyword: cache} if cache is not None else {}))
    return getattr(out, keyword, None) or out.past_key_values


def _cache_keyword(model) -> str:
    """What the model's forward calls its key/value cache: `cache` since transformers 5.2x (`past_key_values`,
    still accepted there, warns), `past_key_values` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def candidate_scores(model, batch: CandidateBatch) -> Tensor:
    """[n_examples, max_candidates] mean log-likelihood per candidate token; -inf where none exists.

    Differentiable (used by the cross-entropy objective).
    """
    logprobs, rows = token_logprobs(model, batch)
    n_rows = batch.input_ids.shape[0]
    sums = torch.zeros(n_rows, dtype=logprobs.dtype, device=logprobs.device).index_add(0, rows, logprobs)
    means = sums / batch.target_mask.sum(dim=1).clamp(min=1).to(sums.dtype)
    shape = (batch.labels.shape[0], int(batch.n_candidates.max()))
    scores = torch.full(shape, float("-inf"), dtype=means.dtype, device=means.device)
    return scores.index_put((batch.row_example, batch.row_candidate), means)


def score_examples(model, tokenizer, examples: Sequence[Example], batch_size: int = 32,
                   max_length: int = 512, progress: bool = True, stop: StopRequest | None = None,
                   max_tokens: int | None = MAX_TOKENS) -> list[list[float]]:
    """Candidate scores of every example, in order: no_grad, eval mode, batches of `batch_size` examples, examples
    sorted by length to keep padding small. A batch's rows go through forwards of at most `max_tokens` tokens
    (`example_pieces`; None: the whole batch in one), which changes no score beyond float rounding. A requested
    ``stop`` raises `EvaluationStopped` between batches."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt))
    device = next(model.parameters()).device
    scores: list[list[float]] = [[] for _ in examples]
    for part in evaluation_batches(model, len(order), batch_size, progress, "scoring", stop):
        chunk = order[part]
        batch = encode_candidates(tokenizer, [examples[i] for i in chunk], max_length)
        rows = [row for piece in example_pieces(batch, None, max_tokens)  # cut on the host: no device sync
                for row in candidate_scores(model, piece.to(device)).cpu().tolist()]
        for i, row in zip(chunk, rows, strict=True):
            scores[i] = row[: len(example_candidates(examples[i])[0])]
    return scores


def evaluation_batches(model: torch.nn.Module, total: int, batch_size: int, progress: bool, desc: str,
                       stop: StopRequest | None) -> Iterator[slice]:
    """The slices of `total` items, `batch_size` at a time, with a progress bar; while the caller works on them the
    model is in eval mode under no_grad (its mode is restored after), and a requested ``stop`` raises
    `EvaluationStopped` between two batches."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, total, batch_size), disable=not progress, desc=desc):
                check_stop(stop)
                yield slice(start, start + batch_size)
    finally:
        model.train(was_training)
