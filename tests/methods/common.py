"""A tiny sentiment task and a builder for any method on a tiny model (shared by the method tests)."""

from __future__ import annotations

import torch

from tests.tiny import build_tiny_tokenizer, tiny_model
from zofo.evaluation.scoring import encode_candidates
from zofo.methods import METHODS, MethodOptions
from zofo.methods.base import batch_loss
from zofo.models.adapters import ParamGroups, attach_adapters, backbone_params, peft_config
from zofo.tasks.example import Example
from zofo.tasks.streams import Batches, ExampleStream

CANDIDATES = (" great", " terrible")
#: every answer is " great": a signal strong enough for a ZO method on a random tiny model in a few steps
EXAMPLES = [Example(f"the {noun} was {word} . it was", CANDIDATES, 0)
            for noun in ("movie", "film") for word in ("good", "bad", "not bad", "not good")]


def build(method: str, peft: str = "lora", dtype: torch.dtype = torch.float32, init_seed: int = 0,
          device: str = "cpu", **options):
    """(method object, encode) on a fresh tiny Llama with every stream serving all of EXAMPLES."""
    tokenizer = build_tiny_tokenizer()
    model = tiny_model("llama", seed=init_seed, vocab_size=len(tokenizer)).to(device, dtype)
    cls = METHODS.get(method)
    if cls.adapter_names:
        torch.manual_seed(init_seed)
        config = peft_config(peft, r=4, num_virtual_tokens=4)
        model, groups = attach_adapters(model, config, cls.adapter_names)
        model.to(device, dtype)
    else:
        groups = ParamGroups(backbone=backbone_params(model))
    streams = {name: ExampleStream(EXAMPLES, batch_size=len(EXAMPLES), seed=0) for name in cls.stream_names}
    batches = Batches(streams, encode=lambda examples: encode_candidates(tokenizer, examples, 64).to(device))
    return cls(model, groups, batches, MethodOptions(**options)), batches.encode


def deployed_loss(method, encode) -> float:
    with method.deployed() as model, torch.no_grad():
        return batch_loss(model, encode(EXAMPLES), "ce").item()


def snapshot(params: dict) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}
