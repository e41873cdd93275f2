"""Model loading: tiny random models of each family, the real SmolLM2 alias, GGUF re-wrap, bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from tests.real_model import smollm2_gguf
from tests.tiny import build_tiny_tokenizer, tiny_model
from zofo.cli.main import main
from zofo.errors import ZofoError, ZofoWarning
from zofo.models import load as load_module
from zofo.models.load import load_model, resolve_source


@pytest.mark.parametrize("family", ["llama", "opt", "qwen2", "gpt2"])
def test_tiny_model_of_each_family_loads_with_same_logits(tmp_path, family):
    tokenizer = build_tiny_tokenizer()
    original = tiny_model(family, vocab_size=len(tokenizer))
    original.save_pretrained(tmp_path / family)
    tokenizer.save_pretrained(tmp_path / family)
    model, loaded_tokenizer = load_model(str(tmp_path / family))
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    assert type(model) is type(original)
    torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=0, atol=0)
    assert loaded_tokenizer.pad_token is not None and loaded_tokenizer.padding_side == "right"


def test_dtype_option(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(load_module, "_WARNED_HALF_ON_CPU", set())  # as in a fresh process
    with pytest.warns(ZofoWarning, match=r"torch.bfloat16 on the CPU: .* use --dtype float32 on the CPU"):
        model, _ = load_model(str(tiny_model_dir), dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_half_precision_on_the_cpu_is_said_once_a_process(tiny_model_dir, monkeypatch, recwarn):
    monkeypatch.setattr(load_module, "_WARNED_HALF_ON_CPU", set())
    for _ in range(2):
        load_model(str(tiny_model_dir), dtype="bfloat16")
        with warnings.catch_warnings():  # what resets Python's own once-per-line memory (peft's wrapping has one)
            pass
    load_model(str(tiny_model_dir), dtype="float16")
    said = [str(w.message).split(" on the CPU")[0] for w in recwarn if "on the CPU" in str(w.message)]
    assert said == ["torch.bfloat16", "torch.float16"]


def test_float32_or_weights_only_staged_on_the_cpu_load_without_a_warning(tiny_model_dir, recwarn):
    load_model(str(tiny_model_dir), dtype="float32")
    load_model(str(tiny_model_dir), dtype="bfloat16", staged=True)  # e.g. to be saved, sharded or copied
    assert not [w for w in recwarn if "on the CPU" in str(w.message)]


def test_tf32_loads_float32_weights_and_sets_the_float32_matmul_precision(tiny_model_dir):
    before = torch.get_float32_matmul_precision()
    try:
        model, _ = load_model(str(tiny_model_dir), dtype="tf32")
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert torch.get_float32_matmul_precision() == "high"
        load_model(str(tiny_model_dir), dtype="float32")
        assert torch.get_float32_matmul_precision() == "highest"
        torch.set_float32_matmul_precision("high")
        load_model(str(tiny_model_dir), dtype="bfloat16")  # not a float32 name: left as it was
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_folder_without_weights_is_refused(tmp_path, tiny_model_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(ZofoError, match="no safetensors weights"):
        load_model(str(tmp_path / "empty"))


def test_pickled_weights_are_refused(tmp_path, tiny_model_dir):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ZofoError, match="only pickled weights"):
        load_model(str(folder))


def test_unknown_model_name_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZofoError, match="unknown model 'no-such-model-xyz'"):
        load_model("no-such-model-xyz")
    assert main(["train", "--model", "./no/such/folder", "--task", "sst2"]) == 1  # found while running: exit 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_bad_dtype_and_missing_device_are_refused(tiny_model_dir):
    with pytest.raises(ZofoError, match="unknown dtype"):
        load_model(str(tiny_model_dir), dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ZofoError, match="no CUDA device"):
            load_model(str(tiny_model_dir), device="cuda")


@pytest.mark.slow
def test_truncated_gguf_is_refused(tmp_path):
    gguf = smollm2_gguf()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(gguf.read_bytes()[:2_000_000])
    with pytest.raises(ZofoError, match="truncated"):
        load_model(str(broken))


def _logprob(model, tokenizer, prompt: str, continuation: str) -> float:
    ids = tokenizer(prompt + continuation, return_tensors="pt").input_ids
    n_prompt = len(tokenizer(prompt).input_ids)
    with torch.no_grad():
        logp = model(ids).logits.log_softmax(-1)[0, :-1]
    targets = ids[0, 1:]
    return logp[n_prompt - 1:].gather(1, targets[n_prompt - 1:, None]).sum().item()


@pytest.mark.slow
def test_real_smollm2_alias_prefers_sensible_continuation():
    smollm2_gguf()  # installed (else skipped, outside CI)
    model, tokenizer = load_model("smollm2-135m")
    assert sum(p.numel() for p in model.parameters()) > 100e6
    prompt = "The capital of France is"
    assert _logprob(model, tokenizer, prompt, " Paris.") > _logprob(model, tokenizer, prompt, " purple spoon.") + 3
    assert _logprob(model, tokenizer, "1, 2, 3, 4,", " 5") > _logprob(model, tokenizer, "1, 2, 3, 4,", " banana")


@pytest.mark.slow
def test_gguf_rewrap_round_trip_same_logits(tmp_path):
    """GGUF -> re-wrapped model -> saved folder -> reloaded: identical logits, and it trains like any model."""
    gguf = smollm2_gguf()
    from_gguf, tokenizer = load_model(str(gguf))
    from_gguf.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    reloaded, _ = load_model(str(tmp_path / "saved"))
    ids = tokenizer("Zeroth-order optimisation needs only forward passes.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, from_gguf(ids).logits, rtol=0, atol=0)
    assert all(p.requires_grad for p in from_gguf.parameters())
    assert getattr(from_gguf.config, "quantization_config", None) is None


@pytest.mark.parametrize("name, meant", [("smollm2-136m", "smollm2-135m"), ("qwen2.5-coder-1.5", "qwen2.5-coder-1.5b")])
def test_a_misspelt_alias_is_refused_with_the_alias_meant(name, meant):
    """It went to the hub and printed a minute of retries for a repository that does not exist."""
    with pytest.raises(ZofoError, match=rf"^unknown model '{name}': not a path, and close to the alias '{meant}' "
                                        rf"\(did you mean --model {meant}\? A hub model is named owner/name\)$"):
        resolve_source(name)


def test_hub_ids_far_from_every_alias_stay_hub_ids():
    for name in ("gpt2", "Qwen/Qwen2.5-0.5B", "smollm2", "HuggingFaceTB/SmolLM2-135M"):
        assert resolve_source(name) == Path(name)
