"""Nanoseconds per element of stochastic rounding and of an SRAdam step on the torch path (the CPU's only path).

    PYTHONPATH=src python benchmarks/rounding_cpu.py [--elements 10000000] [--out DIR]

* stochastic rounding of --elements float32 values to bf16 (``zo.rounding.stochastic_round``, in cache-sized
  pieces) against the same bits made for the whole tensor at once (``rounding_bits`` over every element, then
  one ``_sr_bf16``: how it was done before the pieces), checked bit-identical;
* one optimizer step over a SmolLM2-135M decoder layer's nine bf16 tensors (3.5M elements) with SRAdam (float32
  moments, stochastic rounding) and with torch's AdamW (bf16 moments, round to nearest).
Median of 9 after one warm-up (``directions_cpu.ns_per_element``). Writes rounding_cpu.json and .md under --out.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from directions_cpu import SMOLLM2_LAYER, ns_per_element, write_results  # benchmarks/ is on the path

from zofo.fo.sr_adam import SRAdam
from zofo.zo.directions import rounding_bits
from zofo.zo.rounding import _sr_bf16, stochastic_round


def one_piece(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Stochastic rounding with the bits of every element made at once (the layout before the pieces)."""
    return _sr_bf16(x, rounding_bits(seed, 5, 0, x.numel()))


def layer_params() -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter((torch.randn(shape, generator=g) * 0.03).bfloat16()) for shape in SMOLLM2_LAYER]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).bfloat16()
    return params


def optimizer_step(kind: type[torch.optim.Optimizer]):
    """A draw for ns_per_element: one step of ``kind`` (its state made by a first step)."""
    optimizer = kind(layer_params(), lr=1e-5, weight_decay=0.0)
    optimizer.step()
    return lambda _: optimizer.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=10_000_000)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    x = torch.randn(args.elements) * 0.03
    assert torch.equal(stochastic_round(x, torch.bfloat16, 3, 5), one_piece(x, 3)), "the pieces changed the bits"
    layer = sum(rows * cols for rows, cols in SMOLLM2_LAYER)
    rows = {
        "stochastic rounding to bf16, in pieces": ns_per_element(
            lambda s: stochastic_round(x, torch.bfloat16, s, 5), args.elements),
        "stochastic rounding to bf16, one piece": ns_per_element(lambda s: one_piece(x, s), args.elements),
        "SRAdam step, one SmolLM2 layer (bf16)": ns_per_element(optimizer_step(SRAdam), layer),
        "torch AdamW step, one SmolLM2 layer (bf16)": ns_per_element(optimizer_step(torch.optim.AdamW), layer),
    }
    write_results(args.out, "rounding_cpu", "Stochastic rounding and an SRAdam step on the CPU (torch path)", "work",
                  args.elements, rows)

if __name__ == "__main__":
    main()
