"""Models: a name (alias, folder, GGUF file, hub id) -> (model, tokenizer), the PEFT adapters on it, and the
device-level helpers every layer above uses (pinned uploads, row counting, the unpacked causal mask)."""

from zofo.models.load import DTYPES, convert, load_model, resolve_source

__all__ = ["DTYPES", "convert", "load_model", "resolve_source"]
