"""What switching the active adapter costs on the host: peft's `set_adapter` walks every module of the model.

    PYTHONPATH=src python benchmarks/adapter_switch.py [MODEL] [--calls 200] [--out FILE.json]

Attaches zofo's two LoRA adapters (z, p) to MODEL (default the embedded smollm2-135m) on the CPU and times, per call:
`zofo.models.adapters.activate` alternating z and p (each call switches), `activate` of the adapter already active
(skipped since 2026-12-07), and peft's `set_adapter` alone. Host time only: no forward runs, so the figure holds for
a CUDA run of the same model on a host of the same speed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from zofo.models.adapters import activate, attach_adapters, peft_config
from zofo.models.load import load_model


def per_call_ms(call, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        call(i)
    return 1e3 * (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls {args.calls}: give 1 or more (each timing is a mean over that many calls)")
    torch.set_num_threads(1)
    names = ("z", "p")
    model, _ = load_model(args.model)
    model, groups = attach_adapters(model, peft_config("lora"), names)
    modules = sum(1 for _ in model.modules())
    report = {"model": args.model, "modules": modules, "calls": args.calls,
              "activate_switching_ms": per_call_ms(lambda i: activate(model, groups, names[i % 2]), args.calls),
              "activate_same_ms": per_call_ms(lambda i: activate(model, groups, "z"), args.calls),
              "set_adapter_ms": per_call_ms(lambda i: model.set_adapter(names[i % 2]), args.calls)}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
