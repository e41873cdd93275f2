"""Tiny models and tokenizers for CPU tests (random weights, built from a config)."""


from __future__ import annotations

import os
from pathlib import Path

import torch

SHARED_DATA = Path(os.environ.get("ZOFO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WORDS = ("the a it was great terrible good bad movie film yes no not is true false so because and or "
         "question answer premise hypothesis sentence . , ? ! : \n").split(" ")


def build_tiny_tokenizer():
    """A word-level tokenizer over a small vocabulary (every other word maps to [UNK])."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]")


def tiny_config(family: str, vocab_size: int = 64):
    """A randomly initialised model config of `family` small enough for CPU tests."""
    from transformers import GPT2Config, LlamaConfig, OPTConfig, Qwen2Config

    common = dict(vocab_size=vocab_size)
    if family == "llama":
        return LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=64, tie_word_embeddings=True, **common)
    if family == "qwen2":
        return Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=64, **common)
    if family == "opt":
        return OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                         word_embed_proj_dim=32, max_position_embeddings=128, dropout=0.0, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, **common)
    raise ValueError(family)


def tiny_model(family: str = "llama", seed: int = 0, vocab_size: int = 64):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size))
    return model.eval()


def small_gguf(path: Path) -> Path:
    """A small but valid GGUF file written with the gguf package: scalar, string and string-array metadata, an
    alignment of 64 and two tensors (float32, float16)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_custom_alignment(64)
    writer.add_token_list(["[PAD]", "the", "a"])
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(33, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
