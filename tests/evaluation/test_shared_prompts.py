"""Each example's prompt run once for all its candidates (`shared_prompt_logits`) gives the scores, and their
gradients, of one row per candidate, in float64 on every supported family; where it cannot, it is not used.

Llama's and Qwen2's RMSNorm computes in float32 whatever the model's dtype, so their float64 gradients carry float32
rounding that depends on the batch's layout (measured up to 6.4e-8 on gradients up to 4; finite differences of the
same forward are noisier still). GPT-2 and OPT normalise in float64 and agree to 1e-11."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from peft import LoraConfig, PromptTuningConfig, get_peft_model

from tests.evaluation.conftest import make_tokenizer
from tests.tiny import tiny_model
from zofo.evaluation import scoring
from zofo.evaluation.harness import with_demonstrations
from zofo.evaluation.scoring import (
    candidate_scores,
    common_start,
    encode_candidates,
    example_pieces,
    shared_tokens,
    shares_prompts,
)
from zofo.tasks.example import Example

LONG = "The movie was a great film. It was great. Does this mean that it is true? " * 3
EXAMPLES = [
    Example(LONG + "It was", (" terrible", " great", " a great film."), 1),
    Example("Does this mean that it is true? Yes or No?\n", ("Yes", "No", "Maybe so, it was great"), 2),
    Example("The chandelier shattered on the floor because", (" the chandelier dropped.", " it was"), 0),
]


def scores_and_grads(model, batch, share: bool, monkeypatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", 0 if share else 10**9)
    monkeypatch.setattr(scoring, "SHARE_LEFT", 1.0)  # shared whatever it saves: the comparison is the point
    assert shares_prompts(model, batch) == share
    model.zero_grad(set_to_none=True)
    scores = candidate_scores(model, batch)
    scores[scores.isfinite()].sum().backward()
    return scores.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


#: gradient tolerance (atol, rtol) per family: float32 RMSNorm in Llama and Qwen2 (see the module's docstring)
GRADIENT = {"llama": (2e-7, 1e-6), "qwen2": (2e-7, 1e-6), "opt": (1e-11, 0), "gpt2": (1e-11, 0)}


@pytest.mark.parametrize("family", sorted(GRADIENT))
@pytest.mark.parametrize("max_length", [512, 40])  # 40: every prompt cut from the left
def test_shared_prompts_give_the_scores_and_gradients_of_one_row_per_candidate(family, max_length, monkeypatch):
    tokenizer = make_tokenizer()
    model = tiny_model(family, vocab_size=len(tokenizer)).double().train()
    batch = encode_candidates(tokenizer, EXAMPLES, max_length)
    assert min(batch.shared) >= 1 and len(set(batch.shared)) > 1  # right-padded starts of different lengths
    shared, shared_grads = scores_and_grads(model, batch, True, monkeypatch)
    alone, alone_grads = scores_and_grads(model, batch, False, monkeypatch)
    assert torch.equal(shared.isfinite(), alone.isfinite())
    torch.testing.assert_close(shared, alone, rtol=0, atol=1e-12)
    assert len(shared_grads) == len(alone_grads) > 0
    atol, rtol = GRADIENT[family]
    for a, b in zip(shared_grads, alone_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


#: in-context examples: every row begins with the same demonstrations
DEMOS = [Example("The movie was a great film. It was", (" great", " terrible"), 0),
         Example("Does this mean that it is true?", (" Yes", " No"), 1)] * 2  # rows inside 128 positions
ICL = with_demonstrations(EXAMPLES, DEMOS)


def input_widths(model) -> tuple[list[tuple[int, int]], object]:
    """The (rows, tokens) of every forward's input ids, recorded by a hook on the embedding (and its handle)."""
    seen = []
    handle = model.get_input_embeddings().register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    return seen, handle


@pytest.mark.parametrize("family", sorted(GRADIENT))
def test_demonstrations_run_once_for_the_batch_and_score_as_one_row_per_candidate(family, monkeypatch):
    """The batch's common start (the demonstrations) runs once, with one row, then the three examples' own starts,
    then the eight candidate rows: the scores and gradients of one row per candidate, and of sharing per example
    only."""
    tokenizer = make_tokenizer()
    model = tiny_model(family, vocab_size=len(tokenizer)).double().train()
    batch = encode_candidates(tokenizer, ICL, 2048)
    demos = len(tokenizer(ICL[0].prompt[: -len(EXAMPLES[0].prompt)])["input_ids"])
    assert demos - 1 <= batch.common <= demos + 1 < min(batch.shared)  # a BPE merge may move it by a token
    monkeypatch.setattr(scoring, "COMMON_MIN_TOKENS", 0)
    assert common_start(batch) == batch.common
    seen, handle = input_widths(model)
    once, once_grads = scores_and_grads(model, batch, True, monkeypatch)
    handle.remove()
    assert seen == [(1, batch.common), (3, max(batch.shared) - batch.common), (8, max(batch.own))]
    per_example, per_example_grads = scores_and_grads(model, replace(batch, common=0), True, monkeypatch)
    alone, alone_grads = scores_and_grads(model, batch, False, monkeypatch)
    atol, rtol = GRADIENT[family]
    for scores, grads in ((once, once_grads), (per_example, per_example_grads)):
        assert torch.equal(scores.isfinite(), alone.isfinite())
        torch.testing.assert_close(scores, alone, rtol=0, atol=1e-12)
        assert len(grads) == len(alone_grads) > 0
        for a, b in zip(grads, alone_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def test_the_common_start_runs_once_only_where_it_saves_enough(monkeypatch):
    """Once for the batch where that saves COMMON_MIN_TOKENS tokens, and counted so; examples that begin differently
    share nothing; pieces keep the batch's common start."""
    tokenizer = make_tokenizer()
    batch = encode_candidates(tokenizer, ICL, 2048)
    saved = (len(ICL) - 1) * batch.common
    monkeypatch.setattr(scoring, "COMMON_MIN_TOKENS", saved)
    assert common_start(batch) == batch.common > 0
    per_example = len(ICL) * max(batch.shared) + batch.input_ids.shape[0] * max(batch.own)
    assert shared_tokens(batch) == per_example - saved
    monkeypatch.setattr(scoring, "COMMON_MIN_TOKENS", saved + 1)
    assert common_start(batch) == 0 and shared_tokens(batch) == per_example
    assert encode_candidates(tokenizer, EXAMPLES).common == 0  # "The movie ..." against "Does this ..."
    assert {piece.common for piece in example_pieces(batch, max_rows=3)} == {batch.common}
    one = encode_candidates(tokenizer, ICL[:1], 2048)
    assert one.common == one.shared[0]  # at most the example's shared start: its candidates' positions stay its own


def test_learned_positions_stay_inside_their_table_and_lora_scores_alike():
    """A GPT-2 of 128 positions at max_length 128: rows past a long shared start are padding whose positions must not
    index past the table. Then a LoRA model through the shared path scores as one row per candidate."""
    tokenizer = make_tokenizer()
    examples = [Example(LONG * 2 + f"It was {i}", tuple(f" {w}" for w in "great terrible film movie true floor "
                                                         "ceiling chandelier No Yes".split()), 0) for i in range(8)]
    examples += [Example("It was", tuple(" " + LONG[: 40 + 9 * j] for j in range(10)), 0) for _ in range(8)]
    batch = encode_candidates(tokenizer, examples, max_length=128)
    model = tiny_model("gpt2", vocab_size=len(tokenizer)).double()
    assert model.config.n_positions == 128 and max(batch.shared) + max(batch.own) > 128
    assert shares_prompts(model, batch)  # the default thresholds: 160 rows of 128 tokens
    shared = candidate_scores(model, batch)
    scoring_off = scoring.SHARE_MIN_TOKENS
    try:
        scoring.SHARE_MIN_TOKENS = 10**9
        alone = candidate_scores(model, batch)
    finally:
        scoring.SHARE_MIN_TOKENS = scoring_off
    torch.testing.assert_close(shared, alone, rtol=0, atol=1e-12)
    lora = get_peft_model(tiny_model("llama", vocab_size=len(tokenizer)).double(),
                          LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert shares_prompts(lora, batch)
    with torch.no_grad():
        shared = candidate_scores(lora, batch)
        scoring.SHARE_MIN_TOKENS = 10**9
        try:
            alone = candidate_scores(lora, batch)
        finally:
            scoring.SHARE_MIN_TOKENS = scoring_off
    torch.testing.assert_close(shared, alone, rtol=0, atol=1e-12)


def test_a_long_prompt_is_cut_once_so_every_candidate_follows_the_same_context():
    tokenizer = make_tokenizer()
    batch = encode_candidates(tokenizer, EXAMPLES[:1], max_length=30)
    lengths = batch.attention_mask.sum(1).tolist()
    assert max(lengths) == 30 and len(set(lengths)) > 1  # the longest row fits exactly; the others are shorter
    contexts = [batch.input_ids[r, : n - int(batch.target_mask[r].sum())].tolist() for r, n in enumerate(lengths)]
    assert all(c[: batch.shared[0]] == contexts[0][: batch.shared[0]] for c in contexts)
    assert batch.shared[0] == int(batch.target_mask.argmax(1).min()) - 1  # all of it up to the first answer
    assert batch.own == tuple(n - batch.shared[0] for n in lengths)


def test_pieces_keep_their_examples_shared_starts_and_rows_own_tokens():
    batch = encode_candidates(make_tokenizer(), EXAMPLES)
    pieces = example_pieces(batch, max_rows=3)
    assert [p.shared for p in pieces] == [(s,) for s in batch.shared]
    assert sum((p.own for p in pieces), ()) == batch.own


def test_not_shared_for_prompt_tuning_for_per_row_arguments_or_where_it_saves_too_little(monkeypatch):
    tokenizer = make_tokenizer()
    batch = encode_candidates(tokenizer, EXAMPLES)
    model = tiny_model("llama", vocab_size=len(tokenizer))
    monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", 0)
    assert shares_prompts(model, batch)
    assert shared_tokens(batch) == 3 * 61 + 8 * 9 <= 0.5 * 8 * 66 == 0.5 * batch.input_ids.numel()
    assert shares_prompts(get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])), batch)
    prompt = get_peft_model(tiny_model("llama", vocab_size=len(tokenizer)),
                            PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert not shares_prompts(prompt, batch)
    import functools

    assert not shares_prompts(functools.partial(model), batch)
    short = encode_candidates(tokenizer, [Example("It", (" was great", " x"), 0)])
    assert not shares_prompts(model, short)  # a one-token prompt shares nothing before the first answer token
    assert not shares_prompts(model, encode_candidates(tokenizer, EXAMPLES[1:]))  # saves less than half
    other = tiny_model("llama", vocab_size=len(tokenizer))
    other.config.model_type = "gemma3"  # a family whose cached forward is not tested here
    assert not shares_prompts(other, batch)
    windowed = tiny_model("qwen2", vocab_size=len(tokenizer))
    windowed.config.use_sliding_window = True
    assert not shares_prompts(windowed, batch)
    checkpointed = tiny_model("llama", vocab_size=len(tokenizer))
    checkpointed.gradient_checkpointing_enable()
    assert not shares_prompts(checkpointed, batch)
    monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", 10**9)
    assert not shares_prompts(model, batch)


def test_not_shared_for_an_fsdp_sharded_model(monkeypatch):
    """Ranks of a sharded backbone would decide apart, each on its own rows, and pair unmatched all-gathers."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from tests.ranks import free_port

    monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", 0)
    tokenizer = make_tokenizer()
    batch = encode_candidates(tokenizer, EXAMPLES)
    model = tiny_model("llama", vocab_size=len(tokenizer))
    assert shares_prompts(model, batch)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        for layer in model.model.layers:
            fully_shard(layer)
        assert not shares_prompts(model, batch)
    finally:
        dist.destroy_process_group()


def test_work_counts_the_candidate_rows_once_whether_prompts_are_shared_or_not(monkeypatch):
    from zofo.models.work import WorkCounter

    tokenizer = make_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer)).train()
    batch = encode_candidates(tokenizer, EXAMPLES)
    counted = []
    for minimum in (0, 10**9):  # shared, then not
        monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", minimum)
        counter = WorkCounter(model)
        with counter.counting():
            candidate_scores(model, batch).nan_to_num(neginf=0).sum().backward()
        counter.close()
        counted.append((counter.work.forward_rows, counter.work.backward_rows))
    assert counted == [(8, 8), (8, 8)]  # 3 + 3 + 2 candidate rows


def test_the_common_length_of_many_rows_is_found_from_their_first_and_last():
    """Against walking every row, on random rows over a small alphabet (long common starts, prefixes of each other)."""
    import random

    rng = random.Random(0)
    for _ in range(300):
        start = tuple(rng.randrange(3) for _ in range(rng.randrange(6)))
        rows = [start + tuple(rng.randrange(3) for _ in range(rng.randrange(4))) for _ in range(rng.randrange(1, 6))]
        walked = 0
        while all(len(r) > walked and r[walked] == rows[0][walked] for r in rows):
            walked += 1
        assert scoring._common_length(rows) == walked


def test_the_common_start_of_two_rows_is_found_by_bisection_as_by_a_walk():
    """`_prefix_length` against walking both rows, on random rows over a small alphabet."""
    import random

    rng = random.Random(1)
    for _ in range(500):
        start = [rng.randrange(2) for _ in range(rng.randrange(40))]
        a, b = (start + [rng.randrange(3) for _ in range(rng.randrange(5))] for _ in range(2))
        walked = 0
        while walked < min(len(a), len(b)) and a[walked] == b[walked]:
            walked += 1
        assert scoring._prefix_length(a, b) == scoring._prefix_length(tuple(b), tuple(a)) == walked


#: every example's prompt is the common start (one question, several candidate sets); then one example's start ends
#: where the batch's common start does (its prompt is the demonstrations alone), the others run on past it
SAME_START = [Example(ICL[0].prompt, (" great", " terrible"), 0), Example(ICL[0].prompt, (" a film", " it", " x"), 1)]
ONE_ENDS_THERE = [Example(ICL[0].prompt[: -len(EXAMPLES[0].prompt)], ("Yes", "No"), 0), *ICL]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("examples", [SAME_START, ONE_ENDS_THERE], ids=["all starts common", "one start common"])
def test_starts_that_end_at_the_common_start_score_as_one_row_per_candidate(family, examples, monkeypatch):
    tokenizer = make_tokenizer()
    model = tiny_model(family, vocab_size=len(tokenizer)).double()
    batch = encode_candidates(tokenizer, examples, 2048)
    assert batch.common == min(batch.shared) and (len(set(batch.shared)) == 1) == (examples is SAME_START)
    monkeypatch.setattr(scoring, "COMMON_MIN_TOKENS", 0)
    seen, handle = input_widths(model)
    with torch.no_grad():
        once, _ = scores_and_grads_without_backward(model, batch, monkeypatch)
    handle.remove()
    second = [] if examples is SAME_START else [(len(examples), max(batch.shared) - batch.common)]
    assert seen == [(1, batch.common), *second, (batch.input_ids.shape[0], max(batch.own))]
    monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", 10**9)
    with torch.no_grad():
        alone = candidate_scores(model, batch)
    torch.testing.assert_close(once, alone, rtol=0, atol=1e-12)


def scores_and_grads_without_backward(model, batch, monkeypatch) -> tuple[torch.Tensor, None]:
    monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", 0)
    monkeypatch.setattr(scoring, "SHARE_LEFT", 1.0)
    assert shares_prompts(model, batch)
    return candidate_scores(model, batch), None


def test_the_common_start_runs_once_a_piece_when_pieces_hold_several_examples(monkeypatch):
    """score_examples in forwards of a few examples each: every piece runs the demonstrations once and scores as one
    row per candidate."""
    from zofo.evaluation.scoring import score_examples

    tokenizer = make_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer)).double()
    examples = with_demonstrations(EXAMPLES * 3, DEMOS)
    width = encode_candidates(tokenizer, examples, 2048).input_ids.shape[1]
    monkeypatch.setattr(scoring, "SHARE_LEFT", 1.0)
    monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", 0)
    monkeypatch.setattr(scoring, "COMMON_MIN_TOKENS", 0)
    seen, handle = input_widths(model)
    pieces = score_examples(model, tokenizer, examples, batch_size=9, max_length=2048, progress=False,
                            max_tokens=8 * width)  # pieces of 2-3 examples
    handle.remove()
    ordered = sorted(examples, key=lambda e: len(e.prompt))  # as score_examples orders them; one batch of 9
    n_pieces = len(example_pieces(encode_candidates(tokenizer, ordered, 2048), None, 8 * width))
    common = encode_candidates(tokenizer, examples, 2048).common
    assert 3 <= n_pieces < len(examples) and seen.count((1, common)) == n_pieces
    monkeypatch.setattr(scoring, "SHARE_MIN_TOKENS", 10**9)
    alone = score_examples(model, tokenizer, examples, batch_size=9, max_length=2048, progress=False, max_tokens=None)
    for a, b in zip(pieces, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-12)
