"""Where a graphed ZO step's time goes: GPU kernel time per kind, and the GPU's idle gaps, per step.

    PYTHONPATH=src python benchmarks/profile_step.py [--model opt-1.3b] [--direction gaussian] [--steps 10] \
        [--deferred] [--out DIR]

The step is `benchmarks/zo_step.py`'s graphed step (two probes replayed from CUDA graphs, one fused update),
bf16, batch 16 x 256, random init; with ``--deferred``, its deferred steps (16 queued steps and one pass that
applies their updates, per window; figures divided by 16).  After a warm-up, torch.profiler records ``--steps``
windows, each cut at its ``zo_step`` range, and as many plain forwards (the denominator of zo_step.py's
ratios), each cut at its ``forward`` range.  Per window: wall-clock from its first kernel's start to its last
kernel's end, the time at least one kernel runs (busy), the rest (idle: host work, syncs, launches), and busy
time per kernel kind (perturb, update, matrix products, other); then the step's kernel time per kernel name
against two forwards'.  Writes profile_step.json, profile_step.md and the chrome trace (trace.json) under --out.
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


def read_trace(path: Path) -> tuple[list[tuple[str, float, float]], dict[str, list[tuple[float, float]]]]:
    """(kernels as (name, start, end), host ranges of each user annotation by name), microseconds, from a
    chrome trace that torch.profiler exported."""
    events = json.loads(path.read_text())["traceEvents"]
    kernels = [(e["name"], e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "kernel"]
    windows: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        if e.get("cat") == "user_annotation":
            windows.setdefault(e["name"], []).append((e["ts"], e["ts"] + e["dur"]))
    return kernels, {k: sorted(v) for k, v in windows.items()}


def extended(windows: list[tuple[float, float]], until: float) -> list[tuple[float, float]]:
    """Each window from its start to the next one's (a window's kernels may end after its host range)."""
    return [(a, windows[i + 1][0] if i + 1 < len(windows) else until) for i, (a, _) in enumerate(windows)]


def window_kernels(kernels: list[tuple[str, float, float]], lo: float, hi: float) -> list[tuple[str, float, float]]:
    return [(n, a, b) for n, a, b in kernels if lo <= a < hi]


def step_breakdown(kernels: list[tuple[str, float, float]], windows: list[tuple[float, float]],
                   per: int = 1) -> list[dict]:
    """Per window (host range of ``per`` steps): wall, busy, idle and busy per kind, in ms per step."""
    rows = []
    for lo, hi in windows:
        mine = window_kernels(kernels, lo, hi)
        if not mine:
            continue
        start, end = min(a for _, a, _ in mine), max(b for _, _, b in mine)
        busy = union_us([(a, b) for _, a, b in mine])
        per_kind: dict[str, float] = {}
        for n, a, b in mine:
            per_kind[kind_of(n)] = per_kind.get(kind_of(n), 0.0) + (b - a) / 1e3 / per
        rows.append({"wall_ms": (end - start) / 1e3 / per, "busy_ms": busy / 1e3 / per,
                     "idle_ms": (end - start - busy) / 1e3 / per, **{f"{k}_ms": v for k, v in per_kind.items()}})
    return rows


def by_name(kernels: list[tuple[str, float, float]], windows: list[tuple[float, float]], per: int) -> dict:
    """Kernel name -> (ms, launches) per step, averaged over the windows."""
    out: dict[str, list[float]] = {}
    for lo, hi in windows:
        for n, a, b in window_kernels(kernels, lo, hi):
            t = out.setdefault(n[:120], [0.0, 0.0])
            t[0] += (b - a) / 1e3 / per / len(windows)
            t[1] += 1 / per / len(windows)
    return out


def median_row(rows: list[dict]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys}


def name_table(step: dict, fwd: dict, top: int = 25) -> list[str]:
    """Markdown rows: per kernel name, step ms and launches against two forwards', largest differences first."""
    names = sorted(set(step) | set(fwd), key=lambda n: -abs(step.get(n, (0, 0))[0] - 2 * fwd.get(n, (0, 0))[0]))
    lines = ["| kernel | step ms | 2 forwards ms | step - 2 fwd | launches step / 2 fwd |", "|---|---|---|---|---|"]
    for n in names[:top]:
        s, f = step.get(n, (0.0, 0.0)), fwd.get(n, (0.0, 0.0))
        diff = s[0] - 2 * f[0]
        lines.append(f"| `{n[:90]}` | {s[0]:.3f} | {2 * f[0]:.3f} | {diff:+.3f} | {s[1]:.0f} / {2 * f[1]:.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="opt-1.3b")
    ap.add_argument("--direction", default="gaussian")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--deferred", action="store_true", help="profile the deferred step (zofo train's bf16 default)")
    ap.add_argument("--evict-first", action="store_true", help="perturbed copies evict-first in L2 (kernels)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    from zo_step import DEFERRED, EPS, build, deferred_steps, graphed_step, lm_loss  # benchmarks/ on the path

    from zofo.zo.kernels import triton as kernels

    kernels.EVICT_FIRST = args.evict_first

    model = build(args.model)
    params = dict(model.named_parameters())
    ids = torch.randint(0, model.config.vocab_size, (16, 256), device="cuda")
    probes = zo.GraphedProbes(model, params, lambda inputs: lm_loss(model, inputs["ids"]), args.direction)
    counter = [0]
    step = deferred_steps if args.deferred else graphed_step
    per = DEFERRED if args.deferred else 1

    def forward() -> None:
        with torch.no_grad():
            lm_loss(model, ids)

    for _ in range(2 if args.deferred else 5):
        step(probes, ids, params, args.direction, counter)
        forward()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            with torch.profiler.record_function("zo_step"):
                step(probes, ids, params, args.direction, counter)
        torch.cuda.synchronize()
        for _ in range(args.steps):
            with torch.profiler.record_function("forward"):
                forward()
            torch.cuda.synchronize()
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.direction}{'-deferred' if args.deferred else ''}{'-evict' if args.evict_first else ''}"
    trace = args.out / f"trace-{tag}.json"
    prof.export_chrome_trace(str(trace))
    kernels, windows = read_trace(trace)
    fwd_start = windows["forward"][0][0]
    steps = extended(windows["zo_step"], fwd_start)
    fwds = extended(windows["forward"], float("inf"))
    median, fwd_median = median_row(step_breakdown(kernels, steps, per)), median_row(step_breakdown(kernels, fwds))
    names, fwd_names = by_name(kernels, steps, per), by_name(kernels, fwds, 1)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": torch.cuda.get_device_name(),
              "torch": torch.__version__, "model": args.model, "direction": args.direction, "eps": EPS,
              "deferred": args.deferred, "median": median, "forward_median": fwd_median,
              "kernels_per_step": names, "kernels_per_forward": fwd_names}
    (args.out / f"profile_step-{tag}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# ZO step ({'deferred' if args.deferred else 'graphed'}), {args.model}, {args.direction}: "
             f"median of {args.steps} profiled windows", "",
             f"`PYTHONPATH=src python benchmarks/profile_step.py {' '.join(os.sys.argv[1:])}`  ",
             f"{result['date']}, {result['device']}, torch {result['torch']}", "",
             "| quantity | step ms | forward ms |", "|---|---|---|"]
    keys = sorted(set(median) | set(fwd_median))
    lines += [f"| {k[:-3]} | {median.get(k, 0.0):.2f} | {fwd_median.get(k, 0.0):.2f} |" for k in keys]
    lines += ["", "Kernel time per step by name, against two plain forwards (largest differences first):", ""]
    lines += name_table(names, fwd_names)
    (args.out / f"profile_step-{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
