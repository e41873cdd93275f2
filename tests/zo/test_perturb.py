import pytest
import torch

from tests.zo.zo_models import lm_loss, tiny_llama
from zofo import zo


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_1000_probes_at_lr_0_leave_weights_bit_identical(dtype, batch):
    model = tiny_llama(dtype, layers=1)
    params = dict(model.named_parameters())
    before, rule = _snapshot(model), zo.ZOSGD()
    state = rule.init(params)
    for step in range(500):  # 500 two-sided steps = 1000 probes; an lr-0 update every 10th step
        est = zo.estimate(lambda: lm_loss(model, batch[:1, :4]), model, params, [zo.step_seed(0, step)], 1e-3)
        if step % 10 == 0:
            state = rule.apply(params, est, 0.0, state)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_probe_computes_at_theta_plus_su(batch):
    model = tiny_llama()
    params = dict(model.named_parameters())
    with zo.perturbed(model, params, seed=11, scale=0.1, strict=True) as probe:
        got = lm_loss(model, batch)
    assert probe.touched == set(params)
    explicit = tiny_llama()
    with torch.no_grad():
        for n, p in explicit.named_parameters():  # tied lm_head: same tensor as embed_tokens
            p.add_(0.1 * zo.direction_like(p, 11, zo.tensor_key(n)))
    torch.testing.assert_close(got, lm_loss(explicit, batch), atol=1e-5, rtol=1e-5)


def test_a_tied_weight_is_perturbed_once_per_forward_and_released_before_the_loss(batch, monkeypatch):
    """The embedding and the tied lm_head share one perturbed copy per forward: made once (not once per owner),
    gone once the lm_head has run (so the loss, where a forward peaks, does not hold it), and every forward
    computes at theta + s*u exactly."""
    from zofo.zo import perturb

    model = tiny_llama(torch.bfloat16)
    params, before = dict(model.named_parameters()), _snapshot(model)
    tied = model.model.embed_tokens.weight
    assert tied is model.lm_head.weight
    theta_storage = tied.data_ptr()
    explicit = tiny_llama(torch.bfloat16)
    with torch.no_grad():
        for n, p in explicit.named_parameters():
            p.copy_(perturb.perturbed_copies([p.data], [zo.tensor_key(n)], 5, 0.1)[0])
    made: list[int] = []  # storage addresses of the tensors whose perturbed copies were made
    real = perturb.perturbed_copies
    monkeypatch.setattr(perturb, "perturbed_copies",
                        lambda thetas, *a: made.extend(t.data_ptr() for t in thetas) or real(thetas, *a))
    held_after_lm_head: list[int] = []
    with zo.perturbed(model, params, 5, 0.1, strict=True):
        model.lm_head.register_forward_hook(lambda *_: held_after_lm_head.append(tied.data_ptr()))  # after zofo's
        first, second = lm_loss(model, batch), lm_loss(model, batch[:2])
    assert made.count(theta_storage) == 2  # once per forward
    assert held_after_lm_head == [theta_storage] * 2  # theta itself is back before the loss
    layers = [p.data_ptr() for p in model.model.layers.parameters()]
    assert all(made.count(ptr) == 2 for ptr in layers)  # a layer's copy is made in each forward
    assert torch.equal(first, lm_loss(explicit, batch)) and torch.equal(second, lm_loss(explicit, batch[:2]))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_tied_weight_read_outside_its_owners_is_perturbed_in_every_forward(batch):
    """A loss that applies the tied head by hand (the lm_head module never runs) reads the embedding's copy in
    every forward of the block, not only in the first."""
    from zofo.zo import perturb

    def by_hand(model, ids):
        hidden = model.model(input_ids=ids).last_hidden_state
        return (hidden @ model.lm_head.weight.T).float().logsumexp(-1).mean()

    model, explicit = tiny_llama(torch.bfloat16), tiny_llama(torch.bfloat16)
    with torch.no_grad():
        for n, p in explicit.named_parameters():
            p.copy_(perturb.perturbed_copies([p.data], [zo.tensor_key(n)], 5, 0.1)[0])
    with zo.perturbed(model, dict(model.named_parameters()), 5, 0.1):
        first, second = by_hand(model, batch), by_hand(model, batch[:2])
    assert torch.equal(first, by_hand(explicit, batch)) and torch.equal(second, by_hand(explicit, batch[:2]))


def test_restores_on_error(batch):
    model = tiny_llama()
    params = dict(model.named_parameters())
    before = {n: p.data_ptr() for n, p in params.items()}
    with pytest.raises(RuntimeError, match="boom"), zo.perturbed(model, params, 1, 0.1):
        model(input_ids=batch)
        raise RuntimeError("boom")
    assert all(p.data_ptr() == before[n] for n, p in params.items())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_peft_lora_only(batch):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_llama(torch.bfloat16), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    with torch.no_grad():
        for p in lora.values():
            p.normal_(0, 0.02)  # lora_B starts at 0: make the adapter matter
    before = _snapshot(model)
    base = lm_loss(model, batch)
    for step in range(200):
        with zo.perturbed(model, lora, zo.step_seed(1, step), 1e-2, strict=True):
            assert lm_loss(model, batch) != base
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_unknown_parameter_is_refused():
    model = tiny_llama()
    with (
        pytest.raises(ValueError, match="not owned"),
        zo.perturbed(model, {"x": torch.nn.Parameter(torch.ones(2))}, 0, 1),
    ):
        pass


def test_grouped_probe_sees_per_tensor_perturbation(batch):
    """Per-layer launches give every parameter exactly its per-tensor perturbed copy (kernel path)."""
    pytest.importorskip("triton", reason="the kernel path needs triton")
    from zofo.zo.kernels import ops

    device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: triton's interpreter (conftest)
    model, batch = tiny_llama(torch.bfloat16).to(device), batch.to(device)
    params = dict(model.named_parameters())
    seen = {}
    with zo.perturbed(model, params, 21, 0.1, backend="triton"):
        hooks = []
        for m in model.modules():
            ps = [(n, p) for n, p in m.named_parameters(recurse=False)]
            if ps:
                hooks.append(
                    m.register_forward_pre_hook(lambda m, a, ps=ps: seen.update({id(p): p.data.clone() for _, p in ps}))
                )
        lm_loss(model, batch)
        for h in hooks:
            h.remove()
    for n, p in params.items():
        want = ops.perturbed_copy(p.data, zo.tensor_key(n), 21, 0.1, backend="triton")
        assert torch.equal(seen[id(p)], want), n
