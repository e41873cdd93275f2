"""DeviceEstimate: probes queued without a host read; ZO-SGD applies it exactly as the resolved estimate."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_model
from zofo import zo


def lm_probes(model, params, ids, direction="gaussian"):
    return zo.GraphedProbes(model, params, lambda inputs: model(input_ids=inputs["ids"], labels=inputs["ids"],
                                                                 use_cache=False).loss, direction, capture=False)


def setup(dtype=torch.float32):
    model = tiny_model("llama", vocab_size=128).to(dtype)
    params = dict(model.named_parameters())
    ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    return model, params, ids


@pytest.mark.parametrize("two_sided, q", [(True, 1), (True, 3), (False, 2)])
def test_device_grads_equal_the_resolved_ones_bit_for_bit(two_sided, q):
    model, params, ids = setup()
    probes = lm_probes(model, params, ids)
    seeds = [zo.step_seed(0, 4, i) for i in range(q)]
    queued = zo.queue_probes(lambda s, x: probes({"ids": ids}, s, x), seeds, 1e-3, two_sided, "gaussian")
    resolved = queued.resolve()
    assert queued.projected_grads.dtype == torch.float64
    assert queued.projected_grads.tolist() == resolved.projected_grads
    assert queued.losses.tolist() == resolved.losses
    assert resolved == zo.probe_estimate(lambda s, x: probes({"ids": ids}, s, x), seeds, 1e-3, two_sided)
    assert not resolved.skipped and any(c != 0 for c in resolved.projected_grads)


@pytest.mark.parametrize("dtype, backend", [(torch.float32, "torch"), (torch.bfloat16, "torch"),
                                            (torch.bfloat16, "auto")])
def test_zo_sgd_applies_a_device_estimate_as_the_resolved_one(dtype, backend):
    """Same seeds, same c_i, same float32 coefficients: the update is bit-identical."""
    theta = {}
    for kind in ("device", "host"):
        model, params, ids = setup(dtype)
        probes = lm_probes(model, params, ids)
        queued = zo.queue_probes(lambda s, x, p=probes, i=ids: p({"ids": i}, s, x), [11, 12], 1e-3, True, "gaussian")
        est = queued if kind == "device" else queued.resolve()
        zo.ZOSGD(backend=backend).apply(params, est, 1e-3, zo.UpdateState())
        theta[kind] = {n: p.detach().clone() for n, p in params.items()}
    fresh = dict(setup(dtype)[0].named_parameters())
    assert any(not torch.equal(theta["device"][n], fresh[n]) for n in fresh)
    for name in fresh:
        assert torch.equal(theta["device"][name], theta["host"][name]), name


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_a_non_finite_probe_leaves_theta_bit_identical(weight_decay):
    """A skipped step's device coefficients are zeros (no decay either: weight decay resolves first)."""
    model, params, _ = setup(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in params.items()}
    values = torch.tensor([[1.0], [float("nan")]], dtype=torch.float64)
    queued = zo.DeviceEstimate([5], values, "gaussian", 1e-3, True)
    assert queued.projected_grads.tolist() == [0.0] and queued.resolve().skipped
    zo.ZOSGD(weight_decay=weight_decay).apply(params, queued, 1e-2, zo.UpdateState())
    for name, p in params.items():
        assert torch.equal(p, before[name]), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("direction", zo.DIRECTIONS)
def test_graphed_probes_and_update_never_wait_for_the_host(direction):
    """Queued graphed probes plus the fused update from the device's c: no synchronizing call at all (torch's
    sync debug mode raises on one), and the same weights as the update from the resolved estimate."""
    theta = {}
    for kind in ("device", "host"):
        model = tiny_model("llama", vocab_size=128).to("cuda", torch.bfloat16)
        params = dict(model.named_parameters())
        ids = torch.randint(0, 128, (4, 16), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        probes = zo.GraphedProbes(model, params, lambda inputs, m=model: m(input_ids=inputs["ids"],
                                  labels=inputs["ids"], use_cache=False).loss, direction)
        probes({"ids": ids}, 1, 0.0)  # capture first: a capture itself synchronizes
        torch.cuda.synchronize()
        if kind == "device":
            torch.cuda.set_sync_debug_mode("error")
            try:
                est = zo.queue_probes(lambda s, x, p=probes, i=ids: p({"ids": i}, s, x), [21], 1e-3, True, direction)
                zo.ZOSGD().apply(params, est, 1e-2, zo.UpdateState())
            finally:
                torch.cuda.set_sync_debug_mode("default")
        else:
            est = zo.probe_estimate(lambda s, x, p=probes, i=ids: p({"ids": i}, s, x), [21], 1e-3, True, direction)
            zo.ZOSGD().apply(params, est, 1e-2, zo.UpdateState())
        theta[kind] = {n: p.detach().clone() for n, p in params.items()}
    for name, t in theta["device"].items():
        assert torch.equal(t, theta["host"][name]), name


def test_chained_device_estimates_apply_but_refuse_to_resolve():
    """A chain of device estimates has combined c_i and no per-probe form: resolving it is an error that says
    what to do instead."""
    parts = [zo.DeviceEstimate([s], torch.tensor([[1.0], [0.5]], dtype=torch.float64), "gaussian", 1e-3, True)
             for s in (3, 4)]
    chained, lr = zo.chain(parts, [1e-2, 1e-2])
    assert lr == 2e-2 and chained.seeds == [3, 4]
    assert chained.projected_grads.tolist() == pytest.approx([250.0, 250.0])
    with pytest.raises(ValueError, match="resolve its parts before chain"):
        chained.resolve()
