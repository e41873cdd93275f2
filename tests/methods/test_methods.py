"""One matrix over (method x adapter) on a tiny model: the same invariants for every row."""

from __future__ import annotations

import pytest
import torch

from tests.methods.common import EXAMPLES, build, deployed_loss, snapshot, zo_of

ROWS = [("fo-full", None), ("mezo", None), ("fo-peft", "lora"), ("fo-peft", "prefix"), ("fo-peft", "prompt"),
        ("zo-peft", "lora"), ("zo-peft", "prefix"), ("zo-peft", "prompt"), ("bilevel-zofo", "lora"),
        ("bilevel-zofo", "prefix"), ("bilevel-zofo", "prompt"), ("bilevel-fo", "lora")]
#: learning rates that train the tiny model in a few steps (theta / PEFT)
LR = {"fo-full": dict(lr=3e-3), "mezo": dict(lr=1e-2), "fo-peft": dict(lr_upper=3e-2),
      "zo-peft": dict(lr=1.0), "bilevel-zofo": dict(lr=1e-3, lr_upper=3e-2, lr_lower=3e-2, lower_steps=2),
      "bilevel-fo": dict(lr=1e-3, lr_upper=3e-2, lr_lower=3e-2, lower_steps=2)}


def run(method, peft, steps, **options):
    trainer, encode = build(method, peft or "lora", **{**LR[method], **options})
    before = deployed_loss(trainer, encode)
    logs = [trainer.step(step) for step in range(steps)]
    return trainer, encode, before, logs


@pytest.mark.parametrize("method, peft", ROWS)
def test_training_lowers_the_loss(method, peft):
    trainer, encode, before, logs = run(method, peft, steps=25)
    after = deployed_loss(trainer, encode)
    assert all("loss" in log for log in logs)
    assert after < 0.99 * before, (before, after)


@pytest.mark.parametrize("method, peft", [r for r in ROWS if r[0] in ("mezo", "zo-peft", "bilevel-zofo")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_learning_rate_leaves_zo_parameters_bit_identical(method, peft, dtype):
    trainer, _ = build(method, peft or "lora", dtype=dtype, **{**LR[method], "lr": 0.0})
    zo_params = zo_of(trainer).params
    before = snapshot(zo_params)
    for step in range(5):
        trainer.step(step)
    for name, value in snapshot(zo_params).items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("method, peft", [("mezo", None), ("bilevel-zofo", "lora"), ("fo-peft", "prefix")])
def test_same_seed_same_trajectory(method, peft):
    first, *_ = run(method, peft, steps=4, seed=7)
    second, *_ = run(method, peft, steps=4, seed=7)
    third, *_ = run(method, peft, steps=4, seed=8)
    a, b, c = (snapshot(t.trainable()) for t in (first, second, third))
    assert all(torch.equal(a[n], b[n]) for n in a)
    if method != "fo-peft":  # the run seed drives the ZO directions
        assert any(not torch.equal(a[n], c[n]) for n in a)


def test_lambda_zero_reduces_to_mezo_and_fo_peft():
    """With lam = 0, bilevel-zofo's theta step is a MeZO step on f(theta, p) with the same seed, and its
    p step is an FO-PEFT (Adam) step on f (float64, so the only differences are rounding)."""
    from zofo import zo
    from zofo.methods.base import batch_loss
    from zofo.models.adapters import activate

    options = dict(lr=1e-2, lr_upper=1e-2, lr_lower=1e-2, lam=0.0, lower_steps=1, seed=3)
    assert len(EXAMPLES) == 8
    bilevel, encode = build("bilevel-zofo", "lora", dtype=torch.float64, **options)
    reference, _ = build("bilevel-zofo", "lora", dtype=torch.float64, **options)
    bilevel.step(0)
    model, groups = reference.model, reference.groups
    initial = snapshot(groups.backbone)
    stream = reference.batches.streams["upper"]
    examples_f = stream.next()
    activate(model, groups, "p")
    batch = encode(examples_f)
    estimate = zo.estimate(lambda: batch_loss(model, batch, "ce"), model, groups.backbone,
                           [zo.step_seed(3, 0, 0)], eps=1e-3)
    loss = batch_loss(model, batch, "ce")
    loss.backward()
    adam = torch.optim.Adam(groups.adapter("p").values(), lr=1e-2)
    adam.step()
    zo.ZOSGD().apply(groups.backbone, estimate, 1e-2, zo.ZOSGD().init(groups.backbone))
    for name, param in groups.backbone.items():
        torch.testing.assert_close(bilevel.groups.backbone[name], param, rtol=1e-9, atol=1e-12)
    assert all(not torch.equal(initial[n], p) for n, p in groups.backbone.items()), "theta did not move"
    for name, param in groups.adapter("p").items():
        torch.testing.assert_close(bilevel.groups.adapter("p")[name], param, rtol=1e-9, atol=1e-12)


def test_mixed_adapter_forward_equals_separate_forwards():
    """F's three terms from one LoRA forward with per-row adapters equal the two-forward computation."""
    trainer, _ = build("bilevel-zofo", "lora", lr=1e-2)
    with torch.no_grad():
        for param in trainer.groups.adapter("z").values():
            param.add_(0.05)
        terms = trainer.terms
        assert terms.mixed
        mixed = terms.at_once({"f": EXAMPLES[:3], "g": EXAMPLES[3:]})
        terms.mixed = False
        separate = terms.at_once({"f": EXAMPLES[:3], "g": EXAMPLES[3:]})
    assert abs(mixed[1] - mixed[2]) > 1e-4  # z differs from p, so the routing is visible
    for a, b in zip(mixed, separate, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method, peft", [("mezo", None), ("zo-peft", "lora"), ("zo-peft", "prompt")])
def test_fixed_shape_probes_follow_the_eager_trajectory(method, peft):
    """The CUDA-graph path's fixed-shape batches (probed eagerly here) give the eager run's estimates."""
    eager, encode = build(method, peft or "lora", **LR[method])
    fixed, _ = build(method, peft or "lora", **LR[method])
    assert eager.probes is None  # CPU: no graphs unless asked for
    fixed.probes = fixed.graphed_probes(zo_of(fixed).params, capture=False)
    a, b = eager.step(0), fixed.step(0)
    assert b["seed"] == a["seed"]
    assert float(b["loss"]) == pytest.approx(a["loss"], abs=1e-6)
    assert float(b["projected_grad"]) == pytest.approx(a["projected_grad"], abs=1e-4)
    # later steps drift apart slowly: unmasked right-padded rows round differently (~1e-7 per loss), which
    # 1 / (2 eps) turns into ~1e-4 in c, and these learning rates are large
    for step in range(1, 5):
        a, b = eager.step(step), fixed.step(step)
        assert float(b["loss"]) == pytest.approx(a["loss"], abs=1e-4)
    assert deployed_loss(fixed, encode) == pytest.approx(deployed_loss(eager, encode), abs=1e-3)


@pytest.mark.parametrize("peft", ["lora", "prompt"])
def test_attaching_adapters_raises_no_warning_noise(peft):
    """Warnings a user would see every run and cannot act on: peft reading transformers' deprecated alias, and
    peft's caution about the name 'p' (harmless here: see the loads-back test below)."""
    import warnings

    from tests.tiny import tiny_model
    from zofo.models.adapters import attach_adapters, peft_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped, groups = attach_adapters(tiny_model(), peft_config(peft, num_virtual_tokens=2), ("z", "p"))
    noise = ("is_gradient_checkpointing", "should not be contained in the prefix")
    assert not [w for w in caught if any(n in str(w.message) for n in noise)]
    assert groups.adapter("z") and groups.adapter("p")


@pytest.mark.parametrize("peft", ["lora", "prompt", "prefix"])
def test_a_saved_upper_adapter_loads_back_with_its_values(peft, tmp_path):
    """Adapter `p` is saved in peft's format and `PeftModel.from_pretrained` restores every value of it (peft warns
    that a name inside 'prompt_tuning_' / 'prefix_tuning_' may be reinitialised on loading: not on this path)."""
    from peft import PeftModel

    from tests.tiny import tiny_model
    from zofo.models.adapters import attach_adapters, peft_config, save_adapter

    wrapped, groups = attach_adapters(tiny_model(), peft_config(peft, num_virtual_tokens=2), ("z", "p"))
    torch.manual_seed(1)
    with torch.no_grad():
        for param in groups.adapter("p").values():
            param.copy_(torch.randn_like(param))
    save_adapter(wrapped, "p", str(tmp_path))
    loaded = PeftModel.from_pretrained(tiny_model(), str(tmp_path / "p"))
    restored = dict(loaded.named_parameters())
    for name, param in groups.adapter("p").items():
        twin = name.replace(".p.", ".default.")
        assert torch.equal(restored[twin], param), name
