"""Fixed-shape batches: the same scores as the variable-shape path, shapes that depend on the batch alone."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PromptTuningConfig, get_peft_model

from tests.evaluation.conftest import make_model, make_tokenizer
from tests.evaluation.test_scoring import EXAMPLES
from zofo.evaluation.scoring import candidate_scores, encode_candidates
from zofo.evaluation.static import static_scores, to_static


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def peft_wrapped(kind: str, vocab_size: int):
    model = make_model(vocab_size)
    if kind == "plain":
        return model
    config = (LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False) if kind == "lora"
              else PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    torch.manual_seed(1)
    return get_peft_model(model, config).eval()


@pytest.mark.parametrize("kind", ["plain", "lora", "prompt"])
def test_static_scores_equal_candidate_scores(tokenizer, kind):
    model = peft_wrapped(kind, len(tokenizer))
    batch = encode_candidates(tokenizer, EXAMPLES)
    with torch.no_grad():
        expected = candidate_scores(model, batch)
        got = static_scores(model, to_static(batch))
    assert got.shape == expected.shape == (4, 3)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))  # the missing third candidates
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite], atol=1e-5, rtol=0)


def test_shape_is_bucketed_and_a_function_of_the_batch_alone(tokenizer):
    batch = encode_candidates(tokenizer, EXAMPLES)
    static = to_static(batch, width_multiple=16, answer_multiple=4)
    examples, candidates, width, answer = static.shape
    assert (examples, candidates) == (4, 3)
    assert width % 16 == 0 and batch.input_ids.shape[1] <= width < batch.input_ids.shape[1] + 16
    longest = int(batch.target_mask.sum(1).max())
    assert answer % 4 == 0 and longest <= answer < longest + 4
    assert to_static(batch, 16, 4).shape == static.shape
    # the grid holds each candidate's row at example * candidates + candidate, then padding
    first = static.input_ids[0 * 3 + 1, : batch.input_ids.shape[1]]
    assert torch.equal(first, batch.input_ids[1])
    assert static.candidate_mask.tolist() == [[True, True, False], [True, True, True], [True, True, False],
                                              [True, True, False]]
    assert static.answer_mask.sum().item() == batch.target_mask.sum().item()


def test_host_sizes_give_the_layout_the_device_sizes_give(tokenizer):
    """encode_candidates records the longest answer and most candidates on the host, so to_static needs no
    device sync; the layout equals the one read back from the device."""
    import dataclasses

    batch = encode_candidates(tokenizer, EXAMPLES)
    assert batch.longest_answer == int(batch.target_mask.sum(1).max())
    assert batch.most_candidates == int(batch.n_candidates.max())
    assert batch.to("cpu").longest_answer == batch.longest_answer
    unknown = dataclasses.replace(batch, longest_answer=None, most_candidates=None)
    a, b = to_static(batch).tensors(), to_static(unknown).tensors()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_static_forward_keeps_causal_attention_under_graph_capture(tokenizer, monkeypatch):
    """Under CUDA-graph capture transformers cannot read a mask on the host, so any mask passed becomes a dense
    one (SDPA twice as slow on an H200, docs/RESULTS.md section 11). The static batch passes none: every SDPA
    call must stay mask-free and causal, while the variable-shape path (which passes its mask) gets a dense one."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        calls.append((attn_mask is None, is_causal))
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    model = make_model(len(tokenizer))
    model.set_attn_implementation("sdpa")
    batch = encode_candidates(tokenizer, EXAMPLES)
    with torch.no_grad():
        static_scores(model, to_static(batch))
        static_calls = list(calls)
        calls.clear()
        candidate_scores(model, batch)
    assert static_calls and all(no_mask and causal for no_mask, causal in static_calls)
    assert calls and not any(no_mask for no_mask, _ in calls)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_captured_static_forward_runs_causal_sdpa_without_a_mask(tokenizer, monkeypatch):
    """The same on a real capture: the graph of a static forward holds no dense mask, and replays equal scores."""
    masks = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        masks.append(attn_mask)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = make_model(len(tokenizer)).cuda()
    model.set_attn_implementation("sdpa")
    batch = to_static(encode_candidates(tokenizer, EXAMPLES))
    batch = type(batch)(**{k: v.cuda() for k, v in batch.tensors().items()})
    with torch.no_grad():
        eager = static_scores(model, batch)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            static_scores(model, batch)  # warm-up off the default stream, as zo.graphs does
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        masks.clear()
        with torch.cuda.graph(graph):
            out = static_scores(model, batch)
    graph.replay()
    torch.cuda.synchronize()
    assert masks and all(m is None for m in masks)
    torch.testing.assert_close(out, eager)


def test_causal_mask_shortcut_only_for_a_plain_prefill_inside_the_context():
    """`causal_attention`'s mask function answers None only for a maskless, offset-free, square call inside
    `unpacked_causal()` (both argument styles of transformers' mask functions); otherwise it is transformers'."""
    from zofo.models import attention as ca

    ca._install()
    plain = dict(q_length=8, kv_length=8, q_offset=0, kv_offset=0, attention_mask=None)
    older = dict(cache_position=torch.arange(8), kv_length=8, kv_offset=0, attention_mask=None)
    assert ca._plain_causal_prefill(plain) and ca._plain_causal_prefill(older)
    for change in (dict(q_offset=3), dict(kv_length=11), dict(attention_mask=torch.ones(2, 8)),
                   dict(local_attention_size=4)):
        assert not ca._plain_causal_prefill({**plain, **change})
    assert not ca._plain_causal_prefill({**older, "kv_length": 11})
    calls = []
    ca._ORIGINAL["sdpa"], original = (lambda *a, **k: calls.append(k) or "dense"), ca._ORIGINAL["sdpa"]
    try:
        assert ca._sdpa_mask(**plain) == "dense"            # outside the context: transformers decides
        with ca.unpacked_causal():
            assert ca._sdpa_mask(**plain) is None
            assert ca._sdpa_mask(**{**plain, "q_offset": 3}) == "dense"
        assert len(calls) == 2
    finally:
        ca._ORIGINAL["sdpa"] = original
