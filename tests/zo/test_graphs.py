"""GraphedProbes: the same losses as eager probing, exact probing kept, one capture per input shape."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_model
from zofo import zo


def lm_loss(model):
    return lambda inputs: model(input_ids=inputs["ids"], labels=inputs["ids"], use_cache=False).loss


@pytest.mark.parametrize("two_sided", [True, False])
def test_probe_estimate_through_eager_probes_equals_estimate(two_sided):
    model = tiny_model("llama", vocab_size=128)
    params = dict(model.named_parameters())
    ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    probes = zo.GraphedProbes(model, params, lm_loss(model), "rademacher", capture=False)
    seeds = [zo.step_seed(0, 5, i) for i in range(2)]
    direct = zo.estimate(lambda: lm_loss(model)({"ids": ids}), model, params, seeds, 1e-3, two_sided,
                         "rademacher")
    replayed = zo.probe_estimate(lambda s, x: probes({"ids": ids}, s, x), seeds, 1e-3, two_sided, "rademacher")
    assert replayed == direct
    assert probes.captured == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_replays_equal_eager_probes_and_leave_weights_bit_identical(dtype):
    model = tiny_model("llama", vocab_size=128).to("cuda", dtype)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    graphed = zo.GraphedProbes(model, params, lm_loss(model), "gaussian")
    eager = zo.GraphedProbes(model, params, lm_loss(model), "gaussian", capture=False)
    for shape in [(4, 16), (4, 32), (4, 16)]:
        ids = torch.randint(0, 128, shape, device="cuda")
        for seed, scale in [(3, 1e-2), (3, -1e-2), (9, 1e-2), (9, 0.0)]:
            got, want = graphed({"ids": ids}, seed, scale), eager({"ids": ids}, seed, scale)
            torch.testing.assert_close(got, want, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=0)
    assert graphed.captured == 2 and graphed.capture
    for name, p in params.items():
        assert torch.equal(p, before[name]), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_each_new_shape_captured_leaves_no_memory_behind():
    """Warm-ups share one side stream: cuBLAS keeps a workspace per stream (32 MiB on an H200), so a new stream
    per capture left one allocated for every shape (Bilevel ZOFO's peak memory grew with its shapes)."""
    model = tiny_model("llama", vocab_size=128).to("cuda", torch.bfloat16)
    params = dict(model.named_parameters())
    graphed = zo.GraphedProbes(model, params, lm_loss(model), "gaussian")
    graphed({"ids": torch.randint(0, 128, (4, 8), device="cuda")}, 3, 1e-2)
    torch.cuda.synchronize()
    after_first = torch.cuda.memory_allocated()
    for width in (16, 24, 32, 40):
        graphed({"ids": torch.randint(0, 128, (4, width), device="cuda")}, 3, 1e-2)
    torch.cuda.synchronize()
    assert graphed.captured == 5
    assert torch.cuda.memory_allocated() - after_first < 2**20  # static inputs and outputs only: a few KiB


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_probe_that_cannot_be_captured_falls_back_to_eager_with_a_warning():
    """A loss that reads a value back to the host cannot be captured: the probe warns once, then runs eagerly."""
    model = tiny_model("llama", vocab_size=128).to("cuda", torch.bfloat16)
    params = dict(model.named_parameters())

    def syncing_loss(inputs):
        loss = lm_loss(model)(inputs)
        return loss * (1.0 if loss.item() > -1.0 else 0.0)  # .item() waits for the device: not capturable

    graphed = zo.GraphedProbes(model, params, syncing_loss, "gaussian")
    eager = zo.GraphedProbes(model, params, lm_loss(model), "gaussian", capture=False)
    ids = torch.randint(0, 128, (4, 16), device="cuda")
    with pytest.warns(RuntimeWarning, match="CUDA graph capture of the ZO probe failed"):
        first = graphed({"ids": ids}, 3, 1e-2)
    assert not graphed.capture and graphed.captured == 0
    assert torch.equal(first, eager({"ids": ids}, 3, 1e-2))
    assert torch.equal(graphed({"ids": ids}, 9, -1e-2), eager({"ids": ids}, 9, -1e-2))
    # the failed capture leaves the device's random numbers and later captures working
    torch.randn(8, device="cuda")
    fresh = zo.GraphedProbes(model, params, lm_loss(model), "gaussian")
    assert torch.equal(fresh({"ids": ids}, 3, 1e-2), first) and fresh.captured == 1
