"""Prefetched perturbation: a group's copy made while the previous group computes gives the same forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.zo.zo_models import lm_loss, tiny_llama
from zofo import zo
from zofo.zo import perturb


def _loss(model, params, batch, seed, prefetch, scale=1e-2):
    with torch.no_grad():
        return zo.perturbed_loss(lambda: lm_loss(model, batch), model, params, seed, scale, prefetch=prefetch)


def _count_prefetches(monkeypatch) -> list[str]:
    made: list[str] = []
    original = perturb._Hooks._prefetch
    monkeypatch.setattr(perturb._Hooks, "_prefetch", lambda self, name: made.append(name) or original(self, name))
    return made


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefetched_probes_equal_probes_made_in_place_bit_for_bit(dtype, batch, monkeypatch):
    model = tiny_llama(dtype, layers=3)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    made = _count_prefetches(monkeypatch)
    for seed in (1, 2, 3):
        assert torch.equal(_loss(model, params, batch, seed, True), _loss(model, params, batch, seed, False))
    order = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.layers.2", "model.norm", "lm_head"]
    assert list(perturb._ORDERS[model].values()) == [order]
    assert made == 2 * order[1:]  # the first probe learns the order; the next two prefetch every later group
    for name, p in params.items():
        assert torch.equal(p, before[name]), name


class Stack(nn.Module):
    """Linear layers run in ``self.order``, one of them twice; the order can change between forwards."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
        self.order = [0, 1, 2, 3, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in self.order:
            x = torch.tanh(self.layers[i](x))
        return x.square().mean()


def test_a_forward_that_leaves_the_learned_order_stays_exact(monkeypatch):
    model, x = Stack(), torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    made = _count_prefetches(monkeypatch)

    def probe(seed: int, prefetch: bool) -> torch.Tensor:
        with torch.no_grad(), zo.perturbed(model, params, seed, 0.1, prefetch=prefetch):
            return model(x)

    probe(1, True)                                      # learns 0 1 2 3 1
    model.order = [0, 1, 3, 2]                          # 3 comes where 2 was prefetched: 2's copy waits for it
    assert torch.equal(probe(4, True), probe(4, False))
    assert made == ["layers.1", "layers.2"]             # off the learned order from layers.3 on
    model.order = [3, 2, 1, 0]
    assert torch.equal(probe(5, True), probe(5, False))  # learned 0 1 3 2: off at once
    assert torch.equal(probe(6, True), probe(6, False))  # learned 3 2 1 0
    assert made[2:] == ["layers.2", "layers.1", "layers.0"]
    for name, p in params.items():
        assert torch.equal(p, before[name]), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("direction", ["gaussian", "rademacher"])
def test_copies_made_on_the_side_stream_equal_copies_made_in_line(direction):
    """Eager and graphed probes on CUDA, with and without prefetch on the side stream: equal bit for bit."""
    from tests.tiny import tiny_model

    model = tiny_model("llama", vocab_size=128).to("cuda", torch.bfloat16)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}

    def loss_fn(inputs):
        return model(input_ids=inputs["ids"], labels=inputs["ids"], use_cache=False).loss

    probes = {(capture, prefetch): zo.GraphedProbes(model, params, loss_fn, direction, capture, prefetch=prefetch)
              for capture in (False, True) for prefetch in (False, True)}
    for shape in [(4, 16), (8, 32)]:
        ids = torch.randint(0, 128, shape, device="cuda")
        for seed, scale in [(3, 1e-2), (3, -1e-2), (9, 1e-2)]:
            got = {k: p({"ids": ids}, seed, scale) for k, p in probes.items()}
            assert torch.equal(got[False, True], got[False, False]), (shape, seed, scale)
            assert torch.equal(got[True, True], got[True, False]), (shape, seed, scale)
    assert all(p.capture for (capture, _), p in probes.items() if capture)
    for name, p in params.items():
        assert torch.equal(p, before[name]), name
