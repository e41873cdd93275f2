"""Objectives: "ce" is cross-entropy over candidate scores; "lm" is the LM loss on gold tokens only."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from zofo.errors import ZofoError
from zofo.evaluation.objectives import OBJECTIVES, answer_lm_loss, candidate_cross_entropy
from zofo.evaluation.scoring import candidate_scores, encode_candidates, split_tokens
from zofo.tasks.example import Example

WORDS = ["<pad>", "<s>", "</s>", "it", "was", "great", "terrible", "so", "very", "the", "film", "yes", "no",
         "?"]
EXAMPLES = [Example("the film was", (" great", " very terrible"), 0),
            Example("it was the film ?", (" yes", " no", " so so so"), 2)]


@pytest.fixture(scope="module")
def tokenizer():
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64)
    return LlamaForCausalLM(config)


def test_registry_names():
    assert OBJECTIVES.get("ce") is candidate_cross_entropy and OBJECTIVES.get("lm") is answer_lm_loss
    with pytest.raises(ZofoError, match="ce, lm"):
        OBJECTIVES.get("mse")


def test_ce_is_cross_entropy_of_the_scores(model, tokenizer):
    batch = encode_candidates(tokenizer, EXAMPLES)
    scores = candidate_scores(model, batch)
    by_hand = -(scores[0].log_softmax(0)[0] + scores[1].log_softmax(0)[2]) / 2
    assert candidate_cross_entropy(model, batch).item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_lm_loss_is_mean_nll_of_gold_tokens(model, tokenizer):
    total, count = 0.0, 0
    for example in EXAMPLES:
        context, answer = split_tokens(tokenizer, example.prompt, example.candidates[example.label])
        logprobs = model(input_ids=torch.tensor([context + answer])).logits[0].log_softmax(-1)
        total -= sum(logprobs[len(context) + t - 1, tok].item() for t, tok in enumerate(answer))
        count += len(answer)
    loss = answer_lm_loss(model, encode_candidates(tokenizer, EXAMPLES))
    assert loss.item() == pytest.approx(total / count, abs=1e-5)


@pytest.mark.parametrize("name", ["ce", "lm"])
def test_objectives_backpropagate(model, tokenizer, name):
    model.zero_grad()
    OBJECTIVES.get(name)(model, encode_candidates(tokenizer, EXAMPLES)).backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
