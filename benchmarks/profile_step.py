"""Where a graphed ZO step's time goes: GPU kernel time per kind, and the GPU's idle gaps, per step.

    PYTHONPATH=src python benchmarks/profile_step.py [--model opt-1.3b] [--direction gaussian] [--steps 10] \
        [--out DIR]

The step is `benchmarks/zo_step.py`'s graphed step (two probes replayed from CUDA graphs, one fused update),
bf16, batch 16 x 256, random init.  After a warm-up, torch.profiler records ``--steps`` steps; each step is
cut at its ``zo_step`` range.  Per step: wall-clock from its first kernel's start to its last kernel's end,
the time at least one kernel runs (busy), the rest (idle: host work, syncs, launches), and busy time per kernel
kind (perturb, update, matrix products, other).  Writes profile_step.json, profile_step.md and the chrome
trace (trace.json) under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
from pathlib import Path

import torch

from zofo import zo

KINDS = {"perturb": ("perturb",), "update": ("update",), "matmul": ("gemm", "cutlass", "nvjet", "matmul", "sm90")}


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, keys in KINDS.items() if any(k in name for k in keys)), "other")


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals (microseconds)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def read_trace(path: Path) -> tuple[list[tuple[str, float, float]], list[tuple[float, float]]]:
    """(kernels as (name, start, end), host ranges of the ``zo_step`` annotations), microseconds, from a chrome
    trace that torch.profiler exported."""
    events = json.loads(path.read_text())["traceEvents"]
    kernels = [(e["name"], e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "kernel"]
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "user_annotation" and e.get("name") == "zo_step")
    return kernels, windows


def step_breakdown(kernels: list[tuple[str, float, float]], windows: list[tuple[float, float]]) -> list[dict]:
    """Per step window (host range of the step): wall, busy, idle and busy per kind, in ms."""
    rows = []
    for lo, hi in windows:
        mine = [(n, a, b) for n, a, b in kernels if lo <= a < hi]
        if not mine:
            continue
        start, end = min(a for _, a, _ in mine), max(b for _, _, b in mine)
        busy = union_us([(a, b) for _, a, b in mine])
        per_kind: dict[str, float] = {}
        for n, a, b in mine:
            per_kind[kind_of(n)] = per_kind.get(kind_of(n), 0.0) + (b - a) / 1e3
        rows.append({"wall_ms": (end - start) / 1e3, "busy_ms": busy / 1e3, "idle_ms": (end - start - busy) / 1e3,
                     **{f"{k}_ms": v for k, v in per_kind.items()}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="opt-1.3b")
    ap.add_argument("--direction", default="gaussian")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    from zo_step import EPS, build, graphed_step  # benchmarks/ is on the path when run as a script

    model = build(args.model)
    params = dict(model.named_parameters())
    ids = torch.randint(0, model.config.vocab_size, (16, 256), device="cuda")
    probes = zo.GraphedProbes(model, params, lambda inputs: model(input_ids=inputs["ids"], labels=inputs["ids"],
                                                                  use_cache=False).loss, args.direction)
    counter = [0]
    for _ in range(5):
        graphed_step(probes, ids, params, args.direction, counter)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            with torch.profiler.record_function("zo_step"):
                graphed_step(probes, ids, params, args.direction, counter)
        torch.cuda.synchronize()
    args.out.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(args.out / "trace.json"))
    kernels, windows = read_trace(args.out / "trace.json")
    # a step's kernels may finish after its host range ends: extend each window to the next step's start
    windows = [(a, windows[i + 1][0] if i + 1 < len(windows) else float("inf")) for i, (a, _) in enumerate(windows)]
    rows = step_breakdown(kernels, windows)
    keys = sorted({k for r in rows for k in r})
    median = {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys}
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": torch.cuda.get_device_name(),
              "torch": torch.__version__, "model": args.model, "direction": args.direction, "eps": EPS,
              "steps": rows, "median": median}
    (args.out / "profile_step.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Graphed ZO step, {args.model}, {args.direction}: median of {len(rows)} profiled steps", "",
             f"`PYTHONPATH=src python benchmarks/profile_step.py {' '.join(os.sys.argv[1:])}`  ",
             f"{result['date']}, {result['device']}, torch {result['torch']}", "", "| quantity | ms |", "|---|---|"]
    lines += [f"| {k[:-3]} | {median[k]:.2f} |" for k in keys]
    (args.out / "profile_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
