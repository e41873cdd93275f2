"""How far `zofo meta-test --workers N` shares one device: the same meta-test run with each worker count, timed.

    PYTHONPATH=src python benchmarks/meta_test_workers.py MODEL TASK... [--workers 1 4 8] [--seeds 0 1 2] \
        [--steps 100] [--n-test 100] [--max-rows 64] [--dtype float32] [--device auto] [--out FILE.json]

For each worker count, `zofo meta-test` runs as a process (as a user runs it) into a fresh folder, on every task and
seed given, and is timed by the wall-clock from start to exit (the workers' start-up and model loads included: they
are part of what N processes cost). Where `nvidia-smi` exists, the device's utilisation and memory are sampled every
0.5 s meanwhile. Prints units a minute, the speed-up over the first worker count, the mean utilisation and the peak
memory, and whether every count gave the same results (it should: a worker runs a unit as one process does).
Writes the figures as JSON after every count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def sampler(out: Path) -> subprocess.Popen | None:
    """nvidia-smi writing "utilisation %, memory MiB" lines to `out` every 0.5 s, or None without a GPU tool."""
    if shutil.which("nvidia-smi") is None:
        return None
    return subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                             "-lms", "500"], stdout=out.open("w"), stderr=subprocess.DEVNULL)


def samples(out: Path) -> dict:
    rows = [[float(v) for v in line.split(",")[:2]] for line in out.read_text().splitlines() if line.count(",") >= 1]
    if not rows:
        return {}
    return {"utilisation_mean_pct": statistics.mean(r[0] for r in rows),
            "memory_peak_mib": max(r[1] for r in rows), "samples": len(rows)}


def results(out: Path) -> dict:
    """Per task, every setting's per-seed numbers: what must not depend on the worker count."""
    report = json.loads((out / "meta_test.json").read_text())
    return {row["task"]: {s: row[s]["seeds"] for s in ("zero_shot", "icl", "peft")} for row in report["tasks"]}


def run(args: argparse.Namespace, workers: int, out: Path) -> dict:
    command = [sys.executable, "-m", "zofo.cli", "meta-test", *map(str, args.tasks), "--model", args.model,
               "--workers", str(workers), "--seeds", *map(str, args.seeds), "--steps", str(args.steps),
               "--n-test", str(args.n_test), "--dtype", args.dtype, "--device", args.device, "--out", str(out),
               "--no-progress", *(["--max-rows", str(args.max_rows)] if args.max_rows else []), *args.more]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    watcher = sampler(out.with_suffix(".smi"))
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if watcher is not None:
        watcher.terminate()
        watcher.wait()
    if done.returncode != 0:
        raise SystemExit(f"meta-test --workers {workers} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    units = len(args.tasks) * len(args.seeds)
    return {"workers": workers, "seconds": seconds, "units": units, "units_per_minute": 60 * units / seconds,
            **(samples(out.with_suffix(".smi")) if watcher is not None else {})}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a name zofo loads, or a model folder")
    parser.add_argument("tasks", nargs="+", type=Path, help="task folders (or names) meta-test takes")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="k-shot LoRA steps")
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--more", nargs=argparse.REMAINDER, default=[], help="more meta-test flags (last)")
    args = parser.parse_args(argv)
    report: dict = {"model": args.model, "tasks": [str(t) for t in args.tasks], "seeds": args.seeds,
                    "steps": args.steps, "n_test": args.n_test, "max_rows": args.max_rows, "dtype": args.dtype,
                    "counts": []}
    first = None
    with tempfile.TemporaryDirectory() as scratch:
        for workers in args.workers:
            out = Path(scratch) / f"workers-{workers}"
            got = run(args, workers, out)
            first = first or got
            got["speed_up"] = first["seconds"] / got["seconds"]
            got["same_results_as_first"] = results(out) == results(Path(scratch) / f"workers-{first['workers']}")
            report["counts"].append(got)
            print(f"workers {workers} | {got['seconds']:.1f} s | {got['units_per_minute']:.2f} units/min | "
                  f"speed-up {got['speed_up']:.2f}x | utilisation {got.get('utilisation_mean_pct', float('nan')):.0f}%"
                  f" | peak {got.get('memory_peak_mib', float('nan')):.0f} MiB | same results "
                  f"{got['same_results_as_first']}", flush=True)
            if args.out:  # after every count: a benchmark stopped by a time limit keeps what it measured
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
