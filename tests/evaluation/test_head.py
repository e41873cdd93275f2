"""logits_at: the gathered logits equal the full logits at those positions, for peft models and under probes."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

from zofo import zo
from zofo.evaluation.head import logits_at

CONFIGS = {
    "lora": LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    "prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
}


def wrapped(new_model, kind: str):
    model = new_model(seed=2)
    return model if kind == "plain" else get_peft_model(model, CONFIGS[kind]).eval()


@pytest.mark.parametrize("kind", ["plain", "lora", "prefix", "prompt"])
def test_gathered_logits_equal_the_full_logits(new_model, kind):
    model = wrapped(new_model, kind)
    ids = torch.randint(3, 300, (3, 9), generator=torch.Generator().manual_seed(0))
    rows, cols = torch.tensor([0, 0, 2, 1]), torch.tensor([8, 3, 0, 5])
    params = {n: p for n, p in model.named_parameters()}
    with torch.no_grad():
        for probe in (None, 7):
            scope = zo.perturbed(model, params, probe, 1e-2) if probe else torch.no_grad()
            with scope:
                full = model(input_ids=ids).logits[:, -9:]
                with logits_at(model, rows, cols, seq_len=9):
                    gathered = model(input_ids=ids).logits
            assert gathered.shape == (4, full.shape[-1])
            torch.testing.assert_close(gathered, full[rows, cols], atol=1e-6, rtol=1e-6)
    # the hook is gone after the block: full logits again
    assert model(input_ids=ids).logits.shape[:2] == (3, full.shape[1] + (3 if kind == "prompt" else 0))


def test_a_model_without_an_lm_head_is_refused_with_the_fix():
    from transformers import LlamaModel

    from tests.tiny import tiny_config

    backbone = LlamaModel(tiny_config("llama"))
    with pytest.raises(ValueError, match=r"LlamaModel has no output embeddings.*AutoModelForCausalLM"):
        with logits_at(backbone, torch.tensor([0]), torch.tensor([0]), seq_len=1):
            pass
