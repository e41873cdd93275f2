"""Milliseconds per first-order training step, eager against CUDA graphs, as `zofo train` runs it (GPU).

    PYTHONPATH=src python benchmarks/fo_step.py --model /root/smol --data DATA/sst2 --out DIR

Real SmolLM2-135M in bf16, consecutive training batches of `--task` (batch 16), CUDA events after a
warm-up that also captures the graphs, for the steps of FO-PEFT (LoRA r8), FO full fine-tuning (AdamW) and
one outer step of Bilevel ZOFO (LoRA; K lower steps, the p-step and two probes of F); each with
`train.cuda_graphs` on (the default on CUDA) and off, in the same run. Also one no-grad forward of the
training loss on the same batches, the unit the ZO benchmarks use. For Bilevel ZOFO's graphed step, also where
its time goes: the K lower steps, the upper batches, the probes of F, the p-step and the theta update, each
timed between CUDA events around the method's own calls. Writes fo_step.json and fo_step.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import time
import zlib
from pathlib import Path

import torch
from train_step import timed_steps  # benchmarks/ is on the path when run as a script

from zofo.config import OptimConfig
from zofo.evaluation.scoring import encode_candidates
from zofo.methods import METHODS, Settings
from zofo.methods.base import batch_loss
from zofo.models.adapters import ParamGroups, attach_adapters, backbone_params, peft_config
from zofo.models.load import load_model
from zofo.tasks import load_task, sample_splits
from zofo.tasks.streams import Batches, ExampleStream

OPTIM_KEYS = {f.name for f in dataclasses.fields(OptimConfig)}
VARIANTS = {  # name: (method, options: `optim` values and the method's own)
    "fo-lora": ("fo-peft", dict(lr_upper=1e-4)),
    "fo-full": ("fo-full", dict(lr=1e-5)),
    "bilevel-zofo-lora": ("bilevel-zofo", dict(lr=1e-5, lr_upper=1e-4, lr_lower=1e-4, lower_steps=10)),
}


#: what Bilevel ZOFO's step calls, in order: the K lower steps, the batches' layout, the backbone's estimate,
#: the p-step, the backbone's update (dotted: an attribute of an attribute)
BILEVEL_PARTS = ("lower", "inputs", "theta.estimate_of", "upper", "theta.apply")


class Stopwatch:
    """Marks on the CUDA stream (events) or, on a CPU, on the host clock; milliseconds between two marks."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else 1000 * (end - start)


def owner_of(trainer, part: str) -> tuple[object, str]:
    """The object that holds the (dotted) attribute ``part`` of ``trainer``, and the attribute's own name."""
    *path, name = part.split(".")
    owner = trainer
    for step in path:
        owner = getattr(owner, step)
    return owner, name


def part_times(trainer, parts: tuple[str, ...], steps: int) -> dict[str, float]:
    """Milliseconds per step spent in each of the trainer's callables `parts` (dotted attribute paths), as
    `trainer.step` calls them: every call is wrapped in two marks of a `Stopwatch`, summed over `steps` steps."""
    watch = Stopwatch(torch.cuda.is_available() and next(trainer.model.parameters()).is_cuda)
    spans: dict[str, list] = {name: [] for name in parts}

    def timed(name: str, call):
        def wrapper(*args, **kwargs):
            start = watch.mark()
            out = call(*args, **kwargs)
            spans[name].append((start, watch.mark()))
            return out
        return wrapper

    saved = []
    for name in parts:
        owner, attr = owner_of(trainer, name)
        saved.append((owner, attr, attr in vars(owner), getattr(owner, attr)))
        setattr(owner, attr, timed(name, getattr(owner, attr)))
    try:
        for i in range(steps):
            trainer.step(i)
        if watch.cuda:
            torch.cuda.synchronize()
    finally:
        for owner, attr, own, original in saved:  # the object's own attribute, or the class's method, again
            setattr(owner, attr, original) if own else delattr(owner, attr)
    return {name: sum(watch.ms(a, b) for a, b in spans[name]) / steps for name in parts}


def forward_time(trainer, steps: int, warmup: int) -> float:
    """Milliseconds of one no-grad forward of the training loss on the trainer's batches."""
    with torch.no_grad():
        return timed_steps(lambda i: batch_loss(trainer.model, trainer.batches.next("train"), "ce"), steps, warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data", required=True, help="the task's folder in its official format")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    splits = sample_splits(load_task(args.task, args.data), seed=0)

    def build(method: str, options: dict, cuda_graphs: bool):
        model, tokenizer = load_model(args.model, dtype="bfloat16", device="cuda")
        cls = METHODS.get(method)
        if cls.adapter_names:
            model, groups = attach_adapters(model, peft_config("lora"), cls.adapter_names)
            model.to("cuda")
        else:
            groups = ParamGroups(backbone=backbone_params(model))
        streams = {name: ExampleStream(splits.train, args.batch_size, seed=zlib.crc32(f"0:{name}".encode()))
                   for name in cls.stream_names}
        batches = Batches(streams, lambda ex: encode_candidates(tokenizer, ex, args.max_length).to("cuda"))
        steps = args.steps + args.warmup
        optim = OptimConfig(**{k: v for k, v in options.items() if k in OPTIM_KEYS})
        own = cls.Options(**{k: v for k, v in options.items() if k not in OPTIM_KEYS}) if cls.Options else None
        return cls(model, groups, batches, Settings(steps=steps, cuda_graphs=cuda_graphs, optim=optim), own)

    forward_ms = forward_time(build("fo-peft", {}, False), args.steps, args.warmup)
    rows = []
    for name in args.variants:
        method, options = VARIANTS[name]
        row = {"variant": name}
        for graphs in (False, True):
            trainer = build(method, options, graphs)
            row["graphs_ms" if graphs else "eager_ms"] = timed_steps(trainer.step, args.steps, args.warmup)
            if graphs and method == "bilevel-zofo":
                row["graphs_parts_ms"] = part_times(trainer, BILEVEL_PARTS, args.steps)  # warm already
            torch.cuda.synchronize()
            del trainer
            torch.cuda.empty_cache()
        rows.append(row)
        print(row, flush=True)

    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": "bfloat16",
              "task": args.task, "batch_size": args.batch_size, "steps": args.steps, "forward_ms": forward_ms,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fo_step.json").write_text(json.dumps(result, indent=1) + "\n")
    table = "\n".join([
        "| step | eager ms | CUDA graphs ms | eager / graphs | graphs / forward |", "|---|---|---|---|---|",
        *(f"| {r['variant']} | {r['eager_ms']:.1f} | {r['graphs_ms']:.1f} | {r['eager_ms'] / r['graphs_ms']:.2f} "
          f"| {r['graphs_ms'] / forward_ms:.2f} |" for r in rows),
        *(f"\n{r['variant']} with graphs, ms per outer step in each part (lower: all K of them): "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in r["graphs_parts_ms"].items())
          for r in rows if "graphs_parts_ms" in r),
    ])
    command = "PYTHONPATH=src python benchmarks/fo_step.py " + " ".join(os.sys.argv[1:])
    (args.out / "fo_step.md").write_text(
        f"# First-order steps, eager and CUDA graphs\n\n`{command}`  \n{result['date']}, {result['device']}, "
        f"torch {result['torch']}, {args.task} batch {args.batch_size}, one eager no-grad forward "
        f"{forward_ms:.1f} ms\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
