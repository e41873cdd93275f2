"""Candidate scoring: batching and padding cannot change a score; boundaries; truncation; peft models."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

from zofo.evaluation import evaluate
from zofo.evaluation.scoring import (
    candidate_scores,
    encode_candidates,
    example_pieces,
    score_examples,
    split_tokens,
)
from zofo.tasks.example import Example

EXAMPLES = [
    Example("The movie was a great film. It was", (" terrible", " great"), 1),
    Example("Does this mean that it is true? Yes or No?\n", ("Yes", "No", "Maybe so, it was great"), 2),
    Example("It", (" was the chandelier dropped from the ceiling.", " x"), 0),
    Example("", ("The chandelier shattered.", "It was great."), 1),
]


def reference_score(model, tokenizer, prompt: str, candidate: str) -> float:
    """One unpadded forward for one candidate: mean log p of its tokens."""
    context, answer = split_tokens(tokenizer, prompt, candidate)
    ids = torch.tensor([context + answer])
    with torch.no_grad():
        logprobs = model(input_ids=ids).logits[0].log_softmax(-1)
    return sum(logprobs[len(context) + t - 1, tok].item() for t, tok in enumerate(answer)) / len(answer)


def test_batched_scores_equal_one_at_a_time(model, tokenizer):
    scores = score_examples(model, tokenizer, EXAMPLES, batch_size=3, progress=False)
    for example, row in zip(EXAMPLES, scores, strict=True):
        assert len(row) == len(example.candidates)
        for candidate, score in zip(example.candidates, row, strict=True):
            expected = reference_score(model, tokenizer, example.prompt, candidate)
            assert score == pytest.approx(expected, abs=1e-5)


def test_right_padding_cannot_change_a_score(model, tokenizer):
    alone = score_examples(model, tokenizer, EXAMPLES[:1], progress=False)[0]
    padded = score_examples(model, tokenizer, [EXAMPLES[0], Example("x " * 60, (" y",), 0)],
                            batch_size=2, progress=False)[0]
    assert padded == pytest.approx(alone, abs=1e-5)


def test_batch_layout(tokenizer):
    batch = encode_candidates(tokenizer, EXAMPLES)
    assert batch.input_ids.shape[0] == 9 == len(batch.row_example)
    assert batch.labels.tolist() == [1, 2, 0, 1]
    assert batch.n_candidates.tolist() == [2, 3, 2, 2]
    assert batch.row_candidate.tolist() == [0, 1, 0, 1, 2, 0, 1, 0, 1]
    # every row is real tokens then padding, and its targets are its last real tokens
    lengths = batch.attention_mask.sum(1)
    for r, n in enumerate(lengths.tolist()):
        assert batch.attention_mask[r, :n].all() and not batch.attention_mask[r, n:].any()
        assert batch.target_mask[r, n - 1] == 1 and not batch.target_mask[r, n:].any()
        assert batch.target_mask[r, 0] == 0  # a target always has context


def test_empty_prompt_is_conditioned_on_bos(tokenizer):
    context, answer = split_tokens(tokenizer, "", "It was great.")
    assert context == [tokenizer.bos_token_id]
    assert tokenizer.decode(answer) == "It was great."


def test_bpe_merge_at_boundary_counts_as_candidate(tokenizer):
    # "It was" + "great" (no space) may merge across the boundary: the candidate then starts earlier
    context, answer = split_tokens(tokenizer, "It was gr", "eat")
    assert tokenizer.decode(context + answer) == "It was great"
    assert answer and tokenizer.decode(answer).endswith("eat")


def test_left_truncation_keeps_the_candidate(tokenizer):
    example = Example("It was great. " * 50 + "It was", (" terrible", " great"), 1)
    batch = encode_candidates(tokenizer, [example], max_length=8)
    assert batch.input_ids.shape[1] <= 8
    for r in range(2):
        n = int(batch.attention_mask[r].sum())
        tail = batch.input_ids[r, n - int(batch.target_mask[r].sum()): n].tolist()
        assert tokenizer.decode(tail).strip() == example.candidates[r].strip()


PEFT_CONFIGS = {
    "lora": LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    "prefix": PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    "prompt": PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
}


@pytest.mark.parametrize("kind", sorted(PEFT_CONFIGS))
def test_peft_models_score_and_backpropagate(tokenizer, new_model, kind):
    """Prompt tuning prepends virtual tokens to the logits; prefix tuning extends the attention mask."""
    model = get_peft_model(new_model(seed=1), PEFT_CONFIGS[kind])
    batch = encode_candidates(tokenizer, EXAMPLES)
    scores = candidate_scores(model, batch)
    assert scores.shape == (4, 3)
    assert torch.isinf(scores[0, 2]) and torch.isfinite(scores[1]).all()
    torch.nn.functional.cross_entropy(scores, batch.labels).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # batched equals one example at a time for the peft model too
    with torch.no_grad():
        single = candidate_scores(model, encode_candidates(tokenizer, EXAMPLES[1:2]))
    assert single[0] == pytest.approx(scores[1].detach(), abs=1e-5)


def test_rows_are_the_tokenized_prompt_and_candidate_every_time(tokenizer):
    """Row r holds split_tokens(prompt, candidate) then padding, its last len(answer) tokens targeted; the
    second encoding (served by the row cache) is identical to the first."""
    first, second = encode_candidates(tokenizer, EXAMPLES), encode_candidates(tokenizer, EXAMPLES)
    for name in ("input_ids", "attention_mask", "target_mask"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    rows = [(e.prompt, c) for e in EXAMPLES for c in e.candidates]
    for r, (prompt, candidate) in enumerate(rows):
        context, answer = split_tokens(tokenizer, prompt, candidate)
        n = len(context) + len(answer)
        assert first.input_ids[r, :n].tolist() == context + answer
        assert (first.input_ids[r, n:] == tokenizer.pad_token_id).all()
        assert first.target_mask[r].sum() == len(answer) and first.target_mask[r, n - len(answer):n].all()


class CountingTokenizer:
    """The tokenizer, counting its calls and the texts they encode (a new object: rows cached for the tokenizer itself
    are not its rows)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls, self.texts = tokenizer, 0, 0

    def __call__(self, texts):
        self.calls += 1
        self.texts += len(texts) if isinstance(texts, list) else 1
        return self.tokenizer(texts)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_a_batch_is_tokenized_in_one_call_and_then_served_from_the_row_cache(tokenizer):
    """One call for the examples not cached yet (each prompt with each candidate, each non-empty prompt alone once),
    whose rows are those of `split_tokens` one candidate at a time, a BPE merge at the boundary and a cut prompt
    included; none for cached ones; the least recently used dropped past the cache's tokens."""
    from zofo.evaluation import scoring

    examples = [*EXAMPLES, Example("It was gr", ("eat", "ass"), 0), Example("It was great. " * 20, (" No", " Yes"), 0)]
    counting = CountingTokenizer(tokenizer)
    batch = encode_candidates(counting, examples, max_length=40)
    assert (counting.calls, counting.texts) == (1, 13 + 5)  # 13 candidates, 5 non-empty prompts
    for r, (prompt, candidate) in enumerate((e.prompt, c) for e in examples[:-1] for c in e.candidates):
        context, answer = split_tokens(tokenizer, prompt, candidate)
        assert batch.input_ids[r, : len(context) + len(answer)].tolist() == context + answer
    whole = [split_tokens(tokenizer, examples[-1].prompt, c) for c in examples[-1].candidates]
    drop = max(len(c) + len(a) for c, a in whole) - 40
    assert drop > 0  # the prompt is cut from the left, once for both candidates
    for r, (context, answer) in zip((-2, -1), whole, strict=True):
        row = context[drop:] + answer
        assert batch.input_ids[r, : len(row)].tolist() == row and batch.attention_mask[r].sum() == len(row)
    again = encode_candidates(counting, examples[::-1], max_length=40)
    assert counting.calls == 1 and torch.equal(again.input_ids[-2:], batch.input_ids[:2, :again.input_ids.shape[1]])
    encode_candidates(counting, [*examples, Example("It was", (" great", " x"), 0)], max_length=40)
    assert (counting.calls, counting.texts) == (2, 18 + 3)
    two = sum(len(ids) for rows in scoring._ROWS.rows(tokenizer, examples[1:3], 40) for ids, _ in rows)
    small = scoring._RowCache(tokens=two)  # room for the last two examples' rows, not for the first's as well
    small.rows(counting, examples[:3], 40)
    assert [key[1] for key in small.kept] == [examples[1].prompt, examples[2].prompt] and small.tokens == two


def test_an_example_twice_in_a_batch_is_tokenized_once(tokenizer):
    counting = CountingTokenizer(tokenizer)
    twice = [EXAMPLES[1], EXAMPLES[0], EXAMPLES[1]]
    batch = encode_candidates(counting, twice)
    assert (counting.calls, counting.texts) == (1, 3 + 1 + 2 + 1)
    assert torch.equal(batch.input_ids[:3], batch.input_ids[5:])  # the second copy's rows are the first's


def test_the_row_cache_keeps_its_hits_while_another_thread_empties_it(tokenizer, monkeypatch):
    """A training thread tokenizing outside the lock while another evicts or clears: the rows it found cached before
    are still returned, and the cache stays within its size."""
    from zofo.evaluation import scoring

    one = sum(len(ids) for ids, _ in scoring._ROWS.rows(tokenizer, EXAMPLES[1:2], 40)[0])
    cache = scoring._RowCache(tokens=one)
    cache.rows(tokenizer, EXAMPLES[:1], 40)
    assert len(cache.kept) == 1  # the first example is cached: the next call finds it
    real = scoring._tokenized_rows

    def emptied_meanwhile(*args):
        cache.clear()
        return real(*args)

    monkeypatch.setattr(scoring, "_tokenized_rows", emptied_meanwhile)
    rows = cache.rows(tokenizer, EXAMPLES[:2], 40)  # the first a hit, the second tokenized while the cache empties
    assert rows == real(tokenizer, [(e.prompt, e.candidates) for e in EXAMPLES[:2]], 40)
    assert [key[1] for key in cache.kept] == [EXAMPLES[1].prompt] and cache.tokens == one


def test_an_empty_batch_is_refused_with_the_fix(tokenizer):
    from zofo.errors import ZofoError

    with pytest.raises(ZofoError, match="no examples to encode.*pass at least one example"):
        encode_candidates(tokenizer, [])


@pytest.mark.parametrize("max_rows", [1, 2, 4, 5, 9])
def test_pieces_hold_whole_examples_in_order_and_score_as_the_batch(model, tokenizer, max_rows):
    batch = encode_candidates(tokenizer, EXAMPLES * 2, max_length=64)  # 8 examples, 18 rows
    pieces = example_pieces(batch, max_rows)
    assert torch.equal(torch.cat([p.labels for p in pieces]), batch.labels)
    assert sum(int(p.n_candidates.sum()) for p in pieces) == batch.input_ids.shape[0]
    for piece in pieces:  # at most max_rows rows, unless one example alone has more candidates
        assert piece.input_ids.shape[0] <= max_rows or piece.labels.shape[0] == 1
        assert int(piece.attention_mask[:, -1].max()) == 1  # padding trimmed to the piece's longest row
    with torch.no_grad():
        whole = candidate_scores(model, batch)
        parts = [candidate_scores(model, p) for p in pieces]
    joined = torch.full_like(whole, float("-inf"))
    row = 0
    for part in parts:
        joined[row:row + part.shape[0], : part.shape[1]] = part
        row += part.shape[0]
    torch.testing.assert_close(joined, whole, atol=1e-5, rtol=0)


def test_no_limit_or_a_large_one_keeps_the_batch(tokenizer):
    batch = encode_candidates(tokenizer, EXAMPLES, max_length=64)
    assert example_pieces(batch, None) == [batch] and example_pieces(batch, 100) == [batch]


LONG = Example("It was great. " * 12 + "It was", (" terrible", " great", " a film", " x"), 2)  # 4 long rows


def forwards(model) -> list[tuple[int, int]]:
    """The (rows, width) of every forward of `model` from now on (a hook that stays: use a fresh model)."""
    shapes = []
    model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)
    return shapes


@pytest.mark.parametrize("max_tokens", [1, 40, 120, 300])
def test_pieces_hold_at_most_max_tokens_and_cover_every_row_once_in_order(tokenizer, max_tokens):
    batch = encode_candidates(tokenizer, [*EXAMPLES, LONG, *EXAMPLES], max_length=64)  # 9 examples, 22 rows
    pieces = example_pieces(batch, None, max_tokens)
    assert len(pieces) > 1 and torch.equal(torch.cat([p.labels for p in pieces]), batch.labels)
    row = 0
    for piece in pieces:  # rows x the piece's longest row within max_tokens, unless one example alone exceeds it
        rows, width = piece.input_ids.shape
        assert rows * width <= max_tokens or piece.labels.shape[0] == 1
        assert int(piece.attention_mask[:, -1].max()) == 1  # padding trimmed to the piece's longest row
        for name in ("input_ids", "attention_mask", "target_mask"):
            assert torch.equal(getattr(piece, name), getattr(batch, name)[row:row + rows, :width])
        assert not batch.attention_mask[row:row + rows, width:].any()  # what was cut off is padding only
        assert torch.equal(piece.row_candidate, batch.row_candidate[row:row + rows])
        first = int(batch.row_example[row])
        assert torch.equal(piece.row_example + first, batch.row_example[row:row + rows])
        row += rows
    assert row == batch.input_ids.shape[0]


def test_a_token_bound_and_a_row_bound_hold_together(tokenizer):
    batch = encode_candidates(tokenizer, [*EXAMPLES, LONG, *EXAMPLES], max_length=64)
    pieces = example_pieces(batch, 5, 200)
    assert len(pieces) > 1 and sum(p.input_ids.shape[0] for p in pieces) == batch.input_ids.shape[0]
    for piece in pieces:
        rows, width = piece.input_ids.shape
        assert (rows <= 5 and rows * width <= 200) or piece.labels.shape[0] == 1
    assert example_pieces(batch, None, batch.input_ids.numel()) == [batch]


@pytest.mark.parametrize("max_tokens", [1, 40, 120])
def test_scores_in_forwards_of_max_tokens_equal_the_scores_in_one(tokenizer, new_model, max_tokens):
    """A float64 model (scores stay float64), so that the pieces' other shapes round alike: 1e-12."""
    examples = [*EXAMPLES, LONG, *EXAMPLES, Example("x " * 30, (" y", " z"), 0)]
    model = new_model(seed=2).double()
    whole = score_examples(model, tokenizer, examples, batch_size=len(examples), progress=False, max_tokens=None)
    shapes = forwards(model)
    pieces = score_examples(model, tokenizer, examples, batch_size=len(examples), progress=False,
                            max_tokens=max_tokens)
    assert len(shapes) > 1 and all(rows * width <= max_tokens or rows <= 4 for rows, width in shapes)
    assert sum(rows for rows, _ in shapes) == sum(len(e.candidates) for e in examples)
    for cut, one in zip(pieces, whole, strict=True):
        assert cut == pytest.approx(one, abs=1e-12, rel=0)


def test_evaluate_bounds_its_scoring_forwards(tokenizer, new_model):
    model = new_model(seed=3)
    expected = evaluate(model, tokenizer, None, [*EXAMPLES, LONG], batch_size=8, progress=False)
    shapes = forwards(model)
    assert evaluate(model, tokenizer, None, [*EXAMPLES, LONG], batch_size=8, progress=False, max_tokens=1) == expected
    assert len(shapes) == 5  # one example a forward
