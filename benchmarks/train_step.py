"""Milliseconds per MeZO training step as `zofo train` runs it, on real batches of a real task (GPU).

    PYTHONPATH=src python benchmarks/train_step.py --model /root/smol --data DATA/sst2 --out DIR

The step of `zofo.methods.MeZO` (next batch, two probes, update), timed over consecutive training batches
of `--task` (batch 16, the MeZO protocol's train split), bf16, CUDA events after a warm-up that also
captures the CUDA graphs, for:
* graphs: the default on CUDA (each probe a CUDA-graph replay over a fixed-shape batch);
* eager: `train.cuda_graphs=false`;
* reference: MeZO as published (torch.normal per tensor, four in-place passes) on the same batches;
* forward: one no-grad forward of the training loss, on the same batches.
Writes train_step.json and train_step.md under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from zo_step import EPS, LR, reference_step  # benchmarks/ is on the path when run as a script

from zofo.config import OptimConfig
from zofo.evaluation.scoring import encode_candidates
from zofo.methods import Settings
from zofo.methods.base import batch_loss
from zofo.methods.mezo import MeZO
from zofo.models.adapters import ParamGroups, backbone_params
from zofo.models.load import load_model
from zofo.tasks import load_task, sample_splits
from zofo.tasks.streams import Batches, ExampleStream
from zofo.zo.options import ZOOptions


def timed_steps(step: Callable[[int], object], steps: int, warmup: int) -> float:
    """Mean milliseconds of step(i) over `steps` consecutive calls, after `warmup` calls (CUDA events)."""
    for i in range(warmup):
        step(i)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for i in range(warmup, warmup + steps):
        step(i)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data", required=True, help="the task's folder in its official format")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--direction", default="gaussian")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()

    model, tokenizer = load_model(args.model, dtype="bfloat16", device="cuda")
    splits = sample_splits(load_task(args.task, args.data), seed=0)

    def batches() -> Batches:
        stream = ExampleStream(splits.train, args.batch_size, seed=zlib.crc32(b"0:train"))
        return Batches({"train": stream},
                       lambda ex: encode_candidates(tokenizer, ex, args.max_length).to("cuda"))

    def mezo(cuda_graphs: bool) -> MeZO:
        settings = Settings(steps=args.steps + args.warmup, cuda_graphs=cuda_graphs, optim=OptimConfig(lr=LR),
                            zo=ZOOptions(eps=EPS, direction=args.direction))
        return MeZO(model, ParamGroups(backbone=backbone_params(model)), batches(), settings)

    row: dict = {"model": args.model, "task": args.task, "batch_size": args.batch_size}
    plain = batches()
    with torch.no_grad():
        row["forward_ms"] = timed_steps(lambda i: batch_loss(model, plain.next("train"), "ce"), args.steps,
                                        args.warmup)
    reference = batches()

    def reference_at(i: int) -> None:
        batch = reference.next("train")
        reference_step(model, lambda: batch_loss(model, batch, "ce"), i)

    row["reference_ms"] = timed_steps(reference_at, args.steps, args.warmup)
    row["eager_ms"] = timed_steps(mezo(False).step, args.steps, args.warmup)
    graphed = mezo(True)
    row["graphs_ms"] = timed_steps(graphed.step, args.steps, args.warmup)
    row["graphs_captured"] = graphed.probes.captured if graphed.probes else 0
    row["graphs_in_use"] = bool(graphed.probes and graphed.probes.capture)

    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": "bfloat16",
              "direction": args.direction, "steps": args.steps, "row": row}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_step.json").write_text(json.dumps(result, indent=1) + "\n")
    f, ref = row["forward_ms"], row["reference_ms"]
    table = "\n".join([
        "| variant | ms / step | / forward | reference / variant |", "|---|---|---|---|",
        *(f"| {name} | {row[key]:.2f} | {row[key] / f:.2f} | {ref / row[key]:.2f} |"
          for name, key in [("forward", "forward_ms"), ("reference MeZO", "reference_ms"),
                            ("zofo eager", "eager_ms"), ("zofo CUDA graphs", "graphs_ms")]),
    ])
    command = "PYTHONPATH=src python benchmarks/train_step.py " + " ".join(os.sys.argv[1:])
    (args.out / "train_step.md").write_text(
        f"# MeZO training step on real batches\n\n`{command}`  \n{result['date']}, {result['device']}, "
        f"torch {result['torch']}, {args.task} batch {args.batch_size}, {args.direction}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
