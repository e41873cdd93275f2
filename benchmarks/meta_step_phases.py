"""Where a meta-training outer step's time goes: Bilevel ZOFO's phases, each timed on its own.

    PYTHONPATH=src python benchmarks/meta_step_phases.py MODEL [--split FILE] [--steps 6] [--batch-size 4] \
        [--bigbench-root DIR] [--out FILE.json] [--profile DIR] [--python-profile FILE] [--no-cudnn-attention]

Builds the run as `zofo meta-train` does (`zofo.meta.metarun.MetaRun.build`: the model with its z / p adapters, the
per-task blocks, the seeded streams; T 4, K 10 by default) and takes `--steps` outer steps, timing each call of:
- `lower`: line 1, the K Adam steps on z_i of one task (its block swapped in and out included);
- `encode`: drawing and encoding a batch (line 1's inside `lower`, also counted there; line 2's between the lines);
- `probes`: line 3, the ZO estimate over the T tasks (perturbations, 3 forwards a task a side, value loads);
- `p step`: line 4 for one task (swap included);
- `update`: line 5, theta's ZO-SGD update;
- `swap`: one block moved in or out (inside `lower` and `p step`).
On CUDA each call is bracketed by a device synchronisation, so a phase's time is its own (the step as a whole runs
slower than unbracketed, by the host gaps the syncs add). The first step (lazy initialisations) is reported apart.
Prints seconds per step by phase and writes them as JSON. With `--profile DIR`, one more outer step (not reported)
runs under torch.profiler, itself (`outer step`) and each phase a labelled range: DIR gets key_averages.txt (torch's
op table, by device time on CUDA) and top_ops.json (its top ops as numbers), written by `benchmarks/profiling.py`.
With `--python-profile FILE`, one more step after that runs under cProfile: FILE gets the Python functions by own
and by cumulative time (where the host's time goes while the device waits for it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from zofo.meta.metarun import MetaRun, MetaTrainConfig, checked_split
from zofo.meta.metatrain import MetaBilevel
from zofo.meta.split import meta_train_data
from zofo.models.device import resolve_device

try:  # imported as benchmarks.meta_step_phases (the tests, PYTHONPATH=.)
    from benchmarks.profiling import profiled, write_profile, write_python_profile
except ModuleNotFoundError:  # run as a script: benchmarks/ is on the path
    from profiling import profiled, write_profile, write_python_profile

PHASES = ("lower", "encode", "probes", "p step", "update", "swap")


class PhaseClock:
    """Seconds spent in each wrapped call, per outer step (a device sync on each side of a call on CUDA); each call
    is also a `record_function` range named by its phase, which costs nothing unless a profiler runs."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.steps: list[dict[str, float]] = []

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def wrap(self, owner: object, attribute: str, phase: str) -> None:
        inner: Callable = getattr(owner, attribute)

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            with torch.profiler.record_function(phase):
                result = inner(*args, **kwargs)
            self.sync()
            self.steps[-1][phase] += time.perf_counter() - start
            return result

        setattr(owner, attribute, timed)

    def step(self, run: Callable[[], object]) -> None:
        self.steps.append(defaultdict(float))
        self.sync()
        start = time.perf_counter()
        run()
        self.sync()
        self.steps[-1]["whole step"] = time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a name zofo loads, or a model folder")
    parser.add_argument("--split", default="configs/meta/bigbench_split.yaml")
    parser.add_argument("--bigbench-root", default=None)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tasks-per-step", type=int, default=4)
    parser.add_argument("--lower-steps", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--upper", type=int, default=256, help="per-task D_f examples")
    parser.add_argument("--lower", type=int, default=512, help="per-task D_g examples")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="profile one more step, write its ops here")
    parser.add_argument("--python-profile", type=Path, metavar="FILE",
                        help="one more step under cProfile, its Python functions by time written here")
    parser.add_argument("--no-cudnn-attention", action="store_true",
                        help="take cuDNN out of torch's attention (SDPA) backends: it builds a plan per new shape")
    args = parser.parse_args(argv)
    cudnn_attention = torch.backends.cuda.cudnn_sdp_enabled()
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        with tempfile.TemporaryDirectory() as scratch:  # the run's config.yaml goes there, nothing else
            return measure(args, scratch)
    finally:  # a process-wide switch: put back for whoever called main
        torch.backends.cuda.enable_cudnn_sdp(cudnn_attention)


def measure(args: argparse.Namespace, scratch: str) -> dict:
    cfg = MetaTrainConfig(split=args.split, model=args.model, out=scratch, bigbench_root=args.bigbench_root,
                          batch_size=args.batch_size, tasks_per_step=args.tasks_per_step,
                          lower_steps=args.lower_steps, max_length=args.max_length, device=args.device,
                          dtype=args.dtype, lr=5e-6, upper=args.upper, lower=args.lower, n_dev=1, progress=False)
    split = checked_split(cfg)
    device = torch.device(resolve_device(args.device))
    data = meta_train_data(split, cfg.upper, cfg.lower, seed=cfg.seed, n_dev=cfg.n_dev)
    method = MetaRun(cfg, split, data, device).build()
    clock = PhaseClock(device)
    for attribute, phase in (("lower_steps", "lower"), ("theta_estimate", "probes"), ("p_step", "p step"),
                             ("theta_apply", "update")):
        clock.wrap(method, attribute, phase)
    clock.wrap(method.batches, "encode", "encode")
    for attribute in ("swap_in", "swap_out"):
        clock.wrap(method.blocks, attribute, "swap")
    for step in range(args.steps):
        clock.step(lambda s=step: method.step(s))
    later = clock.steps[1:] or clock.steps
    names = ("whole step", *PHASES)
    mean = {name: statistics.mean(s.get(name, 0.0) for s in later) for name in names}
    report = {"model": args.model, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "dtype": args.dtype, "split": args.split, "batch_size": args.batch_size, "T": args.tasks_per_step,
              "K": args.lower_steps, "first_step": dict(clock.steps[0]), "mean_after_first": mean,
              "steps": [dict(s) for s in clock.steps]}
    print(f"| phase | seconds a step (mean of steps 2-{args.steps}) | first step |\n|---|---|---|")
    for name in names:
        print(f"| {name} | {mean[name]:.3f} | {clock.steps[0].get(name, 0.0):.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.profile:
        profile_step(method, clock, args.steps, args.profile)
    if args.python_profile:  # the clock keeps this step's time apart too (an entry the report never reads)
        write_python_profile(lambda: clock.step(lambda: method.step(args.steps + 1)), args.python_profile)
    return report


def profile_step(method: MetaBilevel, clock: PhaseClock, step: int, out_dir: Path) -> None:
    """Outer step ``step`` (the one after the timed ones) under torch.profiler, its phases labelled by the clock's
    wrappers; its op tables go to out_dir. The clock keeps its time apart (a last entry the report never reads)."""
    def labelled_step() -> None:
        with torch.profiler.record_function("outer step"):  # the phases' denominator in the table
            method.step(step)

    with profiled(clock.cuda) as prof:
        clock.step(labelled_step)
    write_profile(prof, out_dir, "", clock.cuda)


if __name__ == "__main__":
    main()
