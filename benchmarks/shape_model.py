"""A model folder of a published shape with random weights, for memory and speed benchmarks without the real weights.

    PYTHONPATH=src python benchmarks/shape_model.py qwen2.5-1.5b OUT --tokenizer /root/smol [--layers N]
    PYTHONPATH=src python benchmarks/shape_model.py qwen2.5-1.5b TOK --tokenizer MODEL.gguf --tokenizer-only
    PYTHONPATH=src python benchmarks/shape_model.py smollm2-135m /root/smol --tokenizer TOK   (a timing-only call)

A random-init model of a published architecture costs the same memory and time per step as the trained one
(../shared/GPU.md), so memory per method at the 1.5B size can be measured without carrying the 1.1 GB GGUF: write the
folder on the GPU machine, then point any zofo run or benchmark at it (`model.name=OUT`), e.g.
`benchmarks/memory_breakdown.py --model OUT`. The tokenizer is copied from `--tokenizer`: a model folder, or a GGUF
file, whose tokenizer is read from its metadata without touching its weights (its ids must fall inside the shape's
vocabulary, which SmolLM2's 49,152 do for every shape here). `--tokenizer-only` writes the tokenizer alone: the
real Qwen2.5-Coder tokenizer is 11 MB, carried to the GPU machine in one call where the GGUF would take twenty, so the
shape model's sequences have the real model's lengths. Weights are bfloat16 safetensors, seeded. `--layers` cuts
the depth (a CPU check of the path, not the shape's cost). Accuracy needs the real weights: nothing trained on such
a folder means anything. The SmolLM2-135M shape serves a GPU call that measures time or memory only: its tokenizer
(3.4 MB) travels with the call, where the real weights take two calls of their own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

#: published shapes (the models' config.json values that set parameter count and activation memory)
SHAPES: dict[str, dict] = {
    "smollm2-135m": {  # SmolLM2-135M-Instruct, zofo's embedded default: 134.5M parameters, tied head
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 1e5, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
    "qwen2.5-1.5b": {  # Qwen2.5-Coder-1.5B-Instruct, the GGUF of issue 30: 1.78B parameters, untied head
        "model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
        "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": False, "use_sliding_window": False},
    "qwen2.5-0.5b": {  # Qwen2.5-Coder-0.5B-Instruct: 0.49B parameters, tied head
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": True, "use_sliding_window": False},
}
#: the same model as zofo loads its GGUF (`qwen2.5-coder-0.5b`): the file stores the tied head twice, so the
#: converted model has its own output matrix, 630.2M parameters, the model issue 30's 0.5B study trains
SHAPES["qwen2.5-0.5b-untied"] = {**SHAPES["qwen2.5-0.5b"], "tie_word_embeddings": False}


def load_tokenizer(source: Path):
    """The tokenizer of a model folder, or of a GGUF file (from its metadata; the weights are not read)."""
    if source.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    return AutoTokenizer.from_pretrained(str(source))


def write_shape(name: str, out: Path, tokenizer: Path, layers: int | None = None, seed: int = 0) -> int:
    """Write the folder; returns the model's parameter count."""
    values = dict(SHAPES[name])
    if layers is not None:
        values["num_hidden_layers"] = layers
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(tokenizer).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shape", choices=list(SHAPES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", type=Path, required=True,
                        help="a model folder or a GGUF file whose tokenizer is copied")
    parser.add_argument("--tokenizer-only", action="store_true", help="write the tokenizer alone into OUT")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers (a CPU check of the path)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.tokenizer_only:
        tokenizer = load_tokenizer(args.tokenizer)
        tokenizer.save_pretrained(args.out)
        print(f"{args.tokenizer}: tokenizer of {len(tokenizer)} ids -> {args.out}")
        return 0
    count = write_shape(args.shape, args.out, args.tokenizer, args.layers, args.seed)
    print(f"{args.shape}: {count / 1e9:.3f}B parameters, random init (seed {args.seed}) -> {args.out}")
    return count


if __name__ == "__main__":
    main()
