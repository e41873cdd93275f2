"""`activate`: the forward uses the named adapter, every adapter stays trainable, and peft's switch is skipped when
the adapter is already active."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_model
from zofo.models.adapters import activate, attach_adapters, peft_config


@pytest.mark.parametrize("kind", ["lora", "prefix", "prompt"])
def test_activate_routes_the_forward_and_switches_only_on_change(kind, monkeypatch):
    torch.manual_seed(0)
    model, groups = attach_adapters(tiny_model("llama"), peft_config(kind, r=4, num_virtual_tokens=4), ("z", "p"))
    with torch.no_grad():  # z and p differ from each other (LoRA's B starts at zero)
        for shift, name in ((0.3, "z"), (-0.2, "p")):
            for param in groups.adapter(name).values():
                param.add_(shift * torch.randn_like(param))
    ids = torch.tensor([[5, 9, 12, 7, 3, 11]])

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids).logits

    reference = {}
    for name in ("z", "p"):  # peft's own switch, unconditionally
        model.set_adapter(name)
        reference[name] = logits()
    assert not torch.equal(reference["z"], reference["p"])

    switches = []
    set_adapter = model.set_adapter
    monkeypatch.setattr(model, "set_adapter", lambda name: (switches.append(name), set_adapter(name)))
    for name in ("p", "p", "z", "z", "z", "p"):  # p is active after the references
        activate(model, groups, name)
        assert torch.equal(logits(), reference[name]), name
        assert all(param.requires_grad for params in groups.adapters.values() for param in params.values())
    assert switches == ["z", "p"]


def test_target_modules_the_model_lacks_are_a_zofo_error_naming_the_key():
    """peft's own error came through as a raw traceback."""
    from zofo.errors import ZofoError

    with pytest.raises(ZofoError, match=r"peft cannot wrap .* with target_modules \['foo'\]: .*\(name linear "
                                        r"modules the model has") as caught:
        attach_adapters(tiny_model(), peft_config("lora", target_modules=["foo"]), ("z",))
    assert caught.value.key == "peft.target_modules"
