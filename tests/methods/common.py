"""A tiny sentiment task and a builder for any method on a tiny model (shared by the method tests)."""

from __future__ import annotations

from dataclasses import fields

import torch

from tests.tiny import build_tiny_tokenizer, tiny_model
from zofo.config import OptimConfig
from zofo.evaluation.scoring import encode_candidates
from zofo.methods import METHODS, Settings
from zofo.methods.base import batch_loss
from zofo.models.adapters import ParamGroups, attach_adapters, backbone_params, peft_config
from zofo.tasks.example import Example
from zofo.tasks.streams import Batches, ExampleStream
from zofo.zo.options import ZOOptions

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
    return cls(model, groups, batches, *method_args(cls, **options)), batches.encode


def method_args(cls, **options) -> tuple:
    """Flat keyword options (lr=..., eps=..., lam=...) as a method takes them: its `Settings` (with the `optim` and
    `zo` sections) and its own options."""
    kinds = {"settings": Settings, "optim": OptimConfig, "zo": ZOOptions, "own": cls.Options}
    split: dict[str, dict] = {kind: {} for kind in kinds}
    for key, value in options.items():
        kind = next((k for k, c in kinds.items() if c is not None and key in {f.name for f in fields(c)}), None)
        if kind is None:
            raise TypeError(f"{cls.__name__} takes no option {key!r}")
        split[kind][key] = value
    settings = Settings(**split["settings"], optim=OptimConfig(**split["optim"]), zo=ZOOptions(**split["zo"]))
    return settings, cls.Options(**split["own"]) if cls.Options else None


def zo_of(method):
    """The ZO optimizer of a ZO method: its backbone's for the bilevel methods, of its trained group otherwise."""
    return method.theta if hasattr(method, "theta") else method.zo


def deployed_loss(method, encode) -> float:
    with method.deployed() as model, torch.no_grad():
        return batch_loss(model, encode(EXAMPLES), "ce").item()


def snapshot(params: dict) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}
