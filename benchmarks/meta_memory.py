"""Peak GPU memory of meta-training (Bilevel ZOFO, per-task blocks) against multi-task FO-LoRA on the same batches
(issue 28, item 2: at most 1.1x).

    PYTHONPATH=src python benchmarks/meta_memory.py --model /root/smol --bigbench-root DATA --out DIR \
        [--split configs/meta/bigbench_split.yaml] [--batch-size 4] [--steps 3] [--dtype float32]

Two processes (torch counts peaks per process), on the same model, data and batches:
- bilevel-zofo: `--steps` outer steps of `zofo meta-train`'s method, built as `MetaRun` builds it (T 4, K 10, LoRA
  r 8 z_i / p_i blocks for every meta-train task, eager steps); every batch it draws is recorded as
  (task, level) in draw order.
- fo-lora: multi-task FO-LoRA as `zofo meta-train --method fo-peft` trains (one shared LoRA r 8, AdamW, eager
  steps on encoded batches, the pooled baselines' setting), one step on each batch the first process drew, drawn
  again from the same seeded per-task streams: the same examples, in the same order.
Each process reads `torch.cuda.max_memory_allocated` after the model and its adapters are on the device (the
start) and over the steps (reset after the start); the ratio is bilevel's peak over FO-LoRA's. Writes
meta_memory.json and meta_memory.md under --out. Without CUDA it runs the steps and records no memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from zofo.evaluation import encode_candidates
from zofo.meta.metarun import MetaRun, MetaTrainConfig
from zofo.meta.metatrain import TaskStreams, settings_of
from zofo.meta.split import meta_train_data, read_split
from zofo.methods.fo import FOPeft
from zofo.models.adapters import attach_adapters, peft_config
from zofo.models.load import load_model

METHODS = ("bilevel-zofo", "fo-lora")
ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def config(args, out: Path) -> MetaTrainConfig:
    out.mkdir(parents=True, exist_ok=True)
    return MetaTrainConfig(split=args.split, model=args.model, out=str(out), batch_size=args.batch_size,
                           bigbench_root=args.bigbench_root, dtype=args.dtype, lr=1e-5, lr_upper=1e-4,
                           lr_lower=1e-4, tasks_per_step=args.tasks_per_step, lower_steps=args.lower_steps,
                           max_length=args.max_length, device=args.device, progress=False)


def peak_mib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / MIB, 1) if torch.cuda.is_available() else None


def start_counting() -> float | None:
    """Memory allocated now (the model, adapters, optimizer states), then the peak counter reset."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    now = round(torch.cuda.memory_allocated() / MIB, 1)
    torch.cuda.reset_peak_memory_stats()
    return now


def bilevel(args, out: Path) -> dict:
    """`--steps` meta-training steps; returns the memory and the (task, level) of every batch drawn."""
    cfg = config(args, out / "bilevel-run")
    split = read_split(cfg.split, cfg.bigbench_root, lists=("meta_train",))
    data = meta_train_data(split, cfg.upper, cfg.lower, seed=cfg.seed, n_dev=cfg.n_dev)
    method = MetaRun(cfg, split, data, torch.device(args.device)).build()
    drawn: list[tuple[str, str]] = []
    examples = method.batches.examples
    method.batches.examples = lambda task, level: drawn.append((task, level)) or examples(task, level)
    start = start_counting()
    began = time.perf_counter()
    for step in range(args.steps):
        method.step(step)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return {"start_mib": start, "peak_mib": peak_mib(), "seconds": round(time.perf_counter() - began, 2),
            "batches": drawn}


def fo_lora(args, out: Path, drawn: list[list[str]]) -> dict:
    """One multi-task FO-LoRA step (eager, as the pooled baseline runs) on each batch bilevel drew."""
    cfg = config(args, out / "fo-run")
    split = read_split(cfg.split, cfg.bigbench_root, lists=("meta_train",))
    data = meta_train_data(split, cfg.upper, cfg.lower, seed=cfg.seed, n_dev=cfg.n_dev)
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=args.device)
    torch.manual_seed(cfg.seed)
    model, groups = attach_adapters(model, peft_config("lora", r=cfg.r, alpha=cfg.alpha), FOPeft.adapter_names)
    model.to(args.device)
    streams = TaskStreams(data, cfg.batch_size, cfg.seed,
                          lambda ex: encode_candidates(tokenizer, ex, cfg.max_length).to(args.device))
    batches = Replayed(streams, drawn)
    settings = settings_of(cfg.options())  # eager steps, AdamW at lr_upper
    method = FOPeft(model, groups, batches, settings)
    start = start_counting()
    began = time.perf_counter()
    for step in range(len(drawn)):
        method.step(step)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return {"start_mib": start, "peak_mib": peak_mib(), "seconds": round(time.perf_counter() - began, 2),
            "steps": len(drawn)}


class Replayed:
    """`next("train")`: the next of the recorded (task, level) batches, drawn again from the same streams."""

    def __init__(self, streams: TaskStreams, drawn: list[list[str]]):
        self.streams, self.drawn = streams, iter(drawn)

    def next(self, _name: str):
        task, level = next(self.drawn)
        return self.streams.encode(self.streams.examples(task, level))


def one(args) -> None:
    out = Path(args.out)
    if args.one == "bilevel-zofo":
        result = bilevel(args, out)
    else:
        result = fo_lora(args, out, json.loads((out / "bilevel-zofo.json").read_text())["batches"])
    (out / f"{args.one}.json").write_text(json.dumps(result))


def report(args, out: Path, results: dict) -> dict:
    b, f = results["bilevel-zofo"], results["fo-lora"]
    ratio = round(b["peak_mib"] / f["peak_mib"], 3) if b["peak_mib"] and f["peak_mib"] else None
    summary = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "model": args.model, "dtype": args.dtype, "batch_size": args.batch_size,
               "outer_steps": args.steps, "batches": len(b["batches"]), "ratio_bilevel_over_fo_lora": ratio,
               "bilevel-zofo": {k: v for k, v in b.items() if k != "batches"}, "fo-lora": f,
               "command": " ".join(sys.argv)}
    (out / "meta_memory.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# Meta-training memory against multi-task FO-LoRA, same {len(b['batches'])} batches", "",
             f"{summary['device']}, {args.model} ({args.dtype}), batch {args.batch_size} examples, {args.steps} "
             f"outer steps of T {args.tasks_per_step}, K {args.lower_steps}", "",
             "| method | at start (MiB) | peak over the steps (MiB) | seconds |", "|---|---|---|---|",
             f"| Bilevel ZOFO meta-training | {b['start_mib']} | {b['peak_mib']} | {b['seconds']} |",
             f"| multi-task FO-LoRA | {f['start_mib']} | {f['peak_mib']} | {f['seconds']} |", "",
             f"ratio of peaks: **{ratio}** (target at most 1.1)", "", f"    {summary['command']}", ""]
    (out / "meta_memory.md").write_text("\n".join(lines))
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--split", default="configs/meta/bigbench_split.yaml")
    p.add_argument("--bigbench-root", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--tasks-per-step", type=int, default=4)
    p.add_argument("--lower-steps", type=int, default=10)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # internal: one method in this process
    args = p.parse_args(argv)
    if args.one:
        return one(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    passed = list(argv if argv is not None else sys.argv[1:])
    for method in METHODS:
        subprocess.run([sys.executable, __file__, *passed, "--one", method], check=True, env=os.environ | {
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])})
    results = {m: json.loads((out / f"{m}.json").read_text()) for m in METHODS}
    print(json.dumps({k: v for k, v in report(args, out, results).items() if k != "command"}, indent=1))


if __name__ == "__main__":
    main()
