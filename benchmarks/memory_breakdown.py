"""Where a method's training-step memory goes: the live device blocks after some steps, by the code that made them.

    PYTHONPATH=src python benchmarks/memory_breakdown.py --model /root/smol --data-root DATA --task copa \
        --out DIR [--methods fo-peft bilevel-zofo] [--steps 20]

Each method runs in its own process (torch counts memory per process), built as `zofo train` builds it (bf16,
batch 16, LoRA, CUDA graphs, the core study's learning rates), with the allocator's history recorded. After
start-up and after `--steps` steps it writes the memory allocated and the steps' peak, then groups the blocks
still allocated by the first frame of zofo code in their allocation stack (else the first frame) and by memory
pool (the default pool or a CUDA graph's private pool); and, replaying the allocator's trace, the blocks
allocated at the moment of the largest total, by the same code. Why Bilevel ZOFO's peak is above FO-LoRA's on batches of
one shape (benchmarks/results/gpu-2026-12-01/batch-shapes/) is what this is for. Writes memory_breakdown.json
and memory_breakdown.md under --out (the runs' own folders go to the temporary directory, so --out holds only
the results). On a machine without CUDA it runs the steps and records nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

from zofo.api import load_config
from zofo.run.recipe import Run

METHODS = {  # the core study's settings (experiments/studies/core.yaml; FO full: nine_tasks.yaml), LoRA where PEFT
    "fo-peft": ["train.method=fo-peft", "optim.lr_upper=1e-4"],
    "bilevel-zofo": ["train.method=bilevel-zofo", "optim.lr=1e-5", "optim.lr_upper=1e-4", "optim.lr_lower=1e-4",
                     "bilevel.lower_steps=10", "bilevel.deploy=z"],
    "mezo": ["train.method=mezo", "optim.lr=1e-5", "peft.kind=null"],
    "zo-peft": ["train.method=zo-peft", "optim.lr=1e-3"],
    "fo-full": ["train.method=fo-full", "optim.lr=1e-5", "peft.kind=null"],
}


def run_config(args, method: str):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_config(None, [
        f"model.name={args.model}", "model.dtype=bfloat16", f"model.device={device}", f"data.task={args.task}",
        f"data.data={args.data_root / args.data}", "data.max_length=256", "train.batch_size=16", "peft.kind=lora",
        f"train.output_dir={Path(tempfile.gettempdir()) / 'zofo-memory-breakdown' / method}", *METHODS[method]])


def owner(frames: list[dict]) -> str:
    """`file:line function` of the innermost zofo frame of an allocation stack (frames run innermost first),
    and the innermost frame of all where that is another (e.g. torch's linear)."""
    if not frames:
        return "(no stack)"
    mine = next((f for f in frames if "/zofo/" in f["filename"]), frames[0])
    inner = frames[0]
    where = f"{mine['filename'].split('/src/')[-1]}:{mine['line']} {mine['name']}"
    return where if inner is mine else f"{where} <- {inner['filename'].split('/')[-1]}:{inner['line']} {inner['name']}"


def live_blocks() -> tuple[Counter, Counter]:
    """Bytes of the allocated blocks, by allocating code and by memory pool."""
    by_owner, by_pool = Counter(), Counter()
    for segment in torch.cuda.memory._snapshot()["segments"]:
        pool = "default" if tuple(segment.get("segment_pool_id", (0, 0))) == (0, 0) else \
            f"graph pool {tuple(segment['segment_pool_id'])}"
        for block in segment["blocks"]:
            if block["state"] == "active_allocated":
                by_owner[owner(block.get("frames", []))] += block["size"]
                by_pool[pool] += block["size"]
    return by_owner, by_pool


def at_peak(trace: list[dict]) -> tuple[int, Counter]:
    """Replay an allocator trace (``_snapshot()["device_traces"][device]``, oldest first): the most bytes allocated
    at once, and those bytes by allocating code. Only what the trace saw counts (blocks allocated before the
    recording began do not), so it matches ``max_memory_allocated`` only when the recording began first."""
    total, peak, peak_at = 0, 0, -1
    sizes: dict[int, int] = {}
    for i, event in enumerate(trace):
        if event["action"] == "alloc":
            sizes[event["addr"]] = event["size"]
            total += event["size"]
            if total > peak:
                peak, peak_at = total, i
        elif event["action"] == "free_requested" and event["addr"] in sizes:
            total -= sizes.pop(event["addr"])
    live: dict[int, dict] = {}
    for event in trace[:peak_at + 1]:
        if event["action"] == "alloc":
            live[event["addr"]] = event
        elif event["action"] == "free_requested":
            live.pop(event["addr"], None)
    by_owner = Counter()
    for event in live.values():
        by_owner[owner(event.get("frames", []))] += event["size"]
    return peak, by_owner


def measure(args, method: str) -> dict:
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    run = Run(run_config(args, method))
    trainer, _ = run.start()
    mib = 2**20
    after_start = torch.cuda.memory_allocated() / mib if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        trainer.step(step)
    row = {"method": method, "task": args.task, "steps": args.steps, "allocated_after_start_mib": after_start}
    if cuda:
        torch.cuda.synchronize()
        by_owner, by_pool = live_blocks()
        snapshot = torch.cuda.memory._snapshot()
        peak, at_peak_by_owner = at_peak(snapshot["device_traces"][torch.cuda.current_device()])
        row |= {"allocated_after_steps_mib": torch.cuda.memory_allocated() / mib,
                "peak_of_steps_mib": torch.cuda.max_memory_allocated() / mib,
                "live_by_code_mib": {k: v / mib for k, v in by_owner.most_common(15)},
                "live_by_pool_mib": {k: v / mib for k, v in by_pool.most_common()},
                "peak_in_trace_mib": peak / mib,
                "at_peak_by_code_mib": {k: v / mib for k, v in at_peak_by_owner.most_common(15)}}
    return row


def markdown(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        lines += [f"## {r['method']} on {r['task']}, {r['steps']} steps", ""]
        if r.get("peak_of_steps_mib") is None:
            lines += ["(no CUDA: nothing recorded)", ""]
            continue
        lines += [f"allocated after start-up {r['allocated_after_start_mib']:.0f} MiB, after the steps "
                  f"{r['allocated_after_steps_mib']:.0f} MiB, peak of the steps {r['peak_of_steps_mib']:.0f} MiB", "",
                  "| live after the steps, allocated by | MiB |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in r["live_by_code_mib"].items()]
        lines += ["", "| pool | MiB |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in r["live_by_pool_mib"].items()]
        if "peak_in_trace_mib" in r:
            lines += ["", f"At the peak of the recorded trace ({r['peak_in_trace_mib']:.0f} MiB):", "",
                      "| allocated at the peak, by | MiB |", "|---|---|"]
            lines += [f"| {k} | {v:.1f} |" for k, v in r["at_peak_by_code_mib"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--task", default="copa")
    parser.add_argument("--data", default="superglue/COPA", help="the task's folder under --data-root")
    parser.add_argument("--methods", nargs="+", default=["fo-peft", "bilevel-zofo"], choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one method here
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        (args.out / f"{args.one}.json").write_text(json.dumps(measure(args, args.one), indent=1))
        return
    for method in args.methods:  # one process each: torch's memory counters are per process
        subprocess.run([sys.executable, *sys.argv, "--one", method], check=True)
    rows = [json.loads((args.out / f"{m}.json").read_text()) for m in args.methods]
    (args.out / "memory_breakdown.json").write_text(json.dumps(rows, indent=1))
    (args.out / "memory_breakdown.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
