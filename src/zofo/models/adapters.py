"""The only code that touches peft: building PEFT modules, named adapters, and `ParamGroups`.

Bilevel ZOFO keeps two copies of one PEFT module as two named adapters of one `PeftModel`:
`z` (lower level) and `p` (upper level). Which parameters are backbone and which belong to an adapter
is decided once, from object identity (the backbone's own parameters before wrapping), never from
name substrings.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from zofo.errors import ZofoError

PEFT_KINDS = ("lora", "prefix", "prompt")


@dataclass
class ParamGroups:
    """Backbone parameters under their own (unwrapped) names, and each adapter's parameters."""

    backbone: dict[str, nn.Parameter]
    adapters: dict[str, dict[str, nn.Parameter]] = field(default_factory=dict)

    def adapter(self, name: str) -> dict[str, nn.Parameter]:
        return self.adapters[name]


def peft_config(kind: str, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                target_modules: list[str] | None = None, num_virtual_tokens: int = 10):
    """A peft config object for `kind` in lora | prefix | prompt."""
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig

    if kind == "lora":
        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                          task_type="CAUSAL_LM")
    if kind == "prefix":
        return PrefixTuningConfig(num_virtual_tokens=num_virtual_tokens, task_type="CAUSAL_LM")
    if kind == "prompt":
        return PromptTuningConfig(num_virtual_tokens=num_virtual_tokens, task_type="CAUSAL_LM")
    raise ZofoError(f"unknown PEFT kind {kind!r}", f"use one of: {', '.join(PEFT_KINDS)}")


def backbone_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's own parameters by name (tied weights once)."""
    return dict(model.named_parameters())


def attach_adapters(model: nn.Module, config, names: tuple[str, ...]) -> tuple[nn.Module, ParamGroups]:
    """Wrap `model` in a PeftModel holding one adapter per name (all built from `config`)."""
    from peft import get_peft_model

    own = backbone_params(model)
    name_of = {id(p): n for n, p in own.items()}
    with warnings.catch_warnings():
        # peft reads transformers' deprecated alias: nothing the user can act on.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        # 'p' is a substring of peft's 'prompt_tuning_' / 'prefix_tuning_': peft warns that loading such a named
        # adapter back may reinitialise it. zofo saves one adapter at a time in peft's format, which loads back
        # under the name 'default' with every value (tests/methods/test_methods.py).
        warnings.filterwarnings("ignore", "Adapter name '.*' should not be contained in the prefix", UserWarning)
        try:
            wrapped = get_peft_model(model, config, adapter_name=names[0])
        except ValueError as err:  # peft's NoMatchingPeftModuleError among them: modules the model does not have
            targets = getattr(config, "target_modules", None)
            raise ZofoError(f"peft cannot wrap {type(model).__name__} with target_modules {sorted(targets or [])}: "
                            f"{str(err).splitlines()[0]}", "name linear modules the model has (e.g. q_proj, v_proj), "
                            "or leave peft.target_modules unset for peft's default", "peft.target_modules") from err
        for name in names[1:]:
            wrapped.add_adapter(name, config)
    groups = ParamGroups(backbone=own, adapters={name: {} for name in names})
    for full_name, param in wrapped.named_parameters():
        if id(param) in name_of:
            continue
        owner = _adapter_of(full_name, names)
        groups.adapters[owner][full_name] = param
    activate(wrapped, groups, names[0])
    place_prompt_tokens(wrapped, next(iter(own.values())).device)
    return wrapped, groups


def place_prompt_tokens(model: nn.Module, device: torch.device) -> None:
    """Keep peft's prompt-learning token ids on `device`: peft holds them on the CPU and copies them at every
    forward, a host-to-device copy that a CUDA-graph capture forbids (it is a no-op once they are there)."""
    for name, tokens in getattr(model, "prompt_tokens", {}).items():
        model.prompt_tokens[name] = tokens.to(device)


def _adapter_of(param_name: str, names: tuple[str, ...]) -> str:
    """peft puts the adapter name as one dotted component of each of its parameters' names."""
    parts = param_name.split(".")
    owners = [n for n in names if n in parts]
    if len(owners) != 1:
        raise RuntimeError(f"cannot tell which adapter owns {param_name}")
    return owners[0]


def activate(model: nn.Module, groups: ParamGroups, name: str) -> None:
    """Make adapter `name` the one the forward pass uses, keeping every adapter trainable (peft's `set_adapter` freezes
    the inactive LoRA copies). peft's switch walks every module of the model (about 5 ms on SmolLM2-135M on a CPU
    core), so it is skipped where `name` is already the active adapter: a method's K lower steps then switch once, not
    K times. The skip trusts `PeftModel.active_adapter`, which only `PeftModel.set_adapter` keeps current: switch
    adapters through this function (or that method), never through peft's tuner or functional `set_adapter`."""
    if getattr(model, "active_adapter", None) != name:
        model.set_adapter(name)
    for params in groups.adapters.values():
        for param in params.values():
            param.requires_grad_(True)


def save_adapter(model: nn.Module, name: str, out_dir: str) -> None:
    """Save one adapter in peft's own format (`PeftModel.from_pretrained(base, out_dir)` loads it)."""
    model.save_pretrained(out_dir, selected_adapters=[name], safe_serialization=True)


def supports_mixed_batches(model: nn.Module) -> bool:
    """Whether one forward can route each row to its own adapter (peft's `adapter_names`: LoRA only)."""
    configs = getattr(model, "peft_config", {})
    return bool(configs) and all(str(c.peft_type).endswith("LORA") for c in configs.values())
