"""Nanoseconds per element to draw u on the torch path (the CPU's only path), Gaussian and Rademacher.

    PYTHONPATH=src python benchmarks/directions_cpu.py [--elements 4000000] [--out DIR]

One float32 tensor of --elements, ``zo.direction_like`` after one warm-up draw, median of 9 draws (distinct
seeds); torch.randn of the same size for scale.  Also ``zo.direction_group`` over one SmolLM2-135M decoder
layer's nine tensors (3.5M elements), as an exact probe draws them: one call per layer.  Writes
directions_cpu.json and .md under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import torch

from zofo import zo
from zofo.zo.directions import direction_group

# q, k, v, o, gate, up, down, and the two norms of a SmolLM2-135M decoder layer (hidden 576, 3 KV heads of 64)
SMOLLM2_LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536),
                 (576, 1), (576, 1)]


def ns_per_element(draw, n: int, repeats: int = 9) -> float:
    """Median over ``repeats`` draws (distinct seeds) after one warm-up draw: this 2-core machine's timings
    vary by tens of percent between draws."""
    draw(0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        draw(i + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / n * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=4_000_000)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    x = torch.empty(args.elements)
    rows = {d: ns_per_element(lambda s, d=d: zo.direction_like(x, s, 3, d), args.elements) for d in zo.DIRECTIONS}
    rows["torch.randn"] = ns_per_element(lambda s: torch.randn(args.elements), args.elements)
    layer = [numel for shape in SMOLLM2_LAYER for numel in [shape[0] * shape[1]]]
    for d in zo.DIRECTIONS:
        rows[f"{d}, one SmolLM2 layer (direction_group)"] = ns_per_element(
            lambda s, d=d: direction_group(s, list(range(len(layer))), layer, d), sum(layer))
    write_results(args.out, "directions_cpu", "Drawing u on the CPU (torch path)", "draw", args.elements, rows)


def write_results(out: Path, stem: str, title: str, column: str, elements: int, rows: dict[str, float]) -> None:
    """``rows`` (ns per element) as out/stem.json and a markdown table out/stem.md headed by the command line."""
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "threads": torch.get_num_threads(),
              "elements": elements, "ns_per_element": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# {title}", "",
             f"`PYTHONPATH=src python benchmarks/{stem}.py {' '.join(os.sys.argv[1:])}`  ",
             f"{result['date']}, {result['threads']} threads, {elements} elements", "",
             f"| {column} | ns / element |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in rows.items()]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

if __name__ == "__main__":
    main()
