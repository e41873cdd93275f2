"""benchmarks/shape_model.py: the shapes have the published parameter counts, and a written folder is a model zofo
loads and runs (one layer, on the CPU)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from benchmarks.shape_model import SHAPES, main
from tests.real_model import smollm2_gguf
from zofo.models.load import load_model


@pytest.mark.parametrize("name, published", [("qwen2.5-1.5b", 1_777_088_000), ("qwen2.5-0.5b", 494_032_768),
                                             ("qwen2.5-0.5b-untied", 630_167_424), ("smollm2-135m", 134_515_008)])
def test_each_shape_has_the_published_parameter_count(name, published):
    """1.5B: what zofo.load_model counted on the real GGUF (../shared/GPU.md: 1.777B); 0.5B: the model card's;
    0.5B untied: the card's and a second 151,936 x 896 matrix, as the real GGUF converts
    (benchmarks/results/cpu-2026-12-07/qwen-0.5b-loads/: 630.2M); SmolLM2: what zofo's folder converted from the
    embedded GGUF counts (its tied head once)."""
    values = dict(SHAPES[name])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(values.pop("model_type"), **values))
    assert sum(p.numel() for p in model.parameters()) == published


def test_a_written_folder_loads_and_runs(tmp_path, tiny_model_dir):
    count = main(["qwen2.5-0.5b", str(tmp_path / "shape"), "--tokenizer", str(tiny_model_dir), "--layers", "1"])
    model, tokenizer = load_model(str(tmp_path / "shape"), dtype="float32", device="cpu")
    assert sum(p.numel() for p in model.parameters()) == count and model.config.hidden_size == 896
    ids = tokenizer("a film was good", return_tensors="pt")["input_ids"]
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 151936) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_a_gguf_tokenizer_is_written_alone_and_tokenizes_as_the_converted_model(tmp_path):
    """--tokenizer-only from the real SmolLM2 GGUF: a folder with no weights whose tokenizer gives the ids that the
    model zofo converts from the same GGUF gives."""
    gguf = smollm2_gguf()
    assert main(["qwen2.5-1.5b", str(tmp_path / "tok"), "--tokenizer", str(gguf), "--tokenizer-only"]) == 0
    assert not list((tmp_path / "tok").glob("*.safetensors"))
    written = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    _, converted = load_model(str(gguf), dtype="float32", device="cpu")
    text = "The man broke his toe. What was the CAUSE of this? He dropped a hammer on his foot."
    assert written(text)["input_ids"] == converted(text)["input_ids"] and len(written) == len(converted)


@pytest.mark.slow
def test_the_smollm2_shape_is_the_embedded_models_config():
    """Every value the SmolLM2 shape sets equals the config of the model zofo reads from the embedded GGUF, so a
    timing run on the shape runs the real model's layers."""
    model, _ = load_model(str(smollm2_gguf()), dtype="float32", device="cpu")
    real = model.config.to_dict()
    for key, value in SHAPES["smollm2-135m"].items():
        if key == "rope_theta":
            assert real["rope_parameters"]["rope_theta"] == pytest.approx(value), key
        elif key == "rms_norm_eps":
            assert real[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert real[key] == value, key
