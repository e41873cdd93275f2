"""The package's shared fixtures (a tiny model folder, the real data folder), for the harness's tests too."""

from tests.conftest import shared_data, tiny_model_dir, tiny_tokenizer

__all__ = ["shared_data", "tiny_model_dir", "tiny_tokenizer"]
