"""Methods x tasks x seeds, each run an independent `zofo train` process; several share the GPU at once.

    python benchmarks/study.py benchmarks/study/sst2_small.yaml --out runs/study --parallel 8
    python benchmarks/study.py STUDY.yaml --out runs/x --parallel 20 --devices 0 1 --only cb__ copa__   (two GPUs)
    python benchmarks/study.py STUDY.yaml --out runs/x --parallel 2 --together 10 --devices 0 1   (one process
        per GPU, its 10 runs on their own CUDA streams: kernels overlap instead of taking turns; no memory figures)
    python benchmarks/study.py STUDY.yaml --out runs/x --only cb__ --seeds 1 2 --list   (what would run; an --only
        string that matches no run is an error)
    timeout -s TERM 500 python benchmarks/study.py STUDY.yaml --out runs/x --parallel 12   (at 500 s its runs save
        a checkpoint and stop; the same command later continues them)
    python benchmarks/study.py --aggregate runs/study --results benchmarks/results/study
    python benchmarks/study.py --aggregate runs/a runs/b --results OUT      (studies of several sessions, pooled)
    python benchmarks/study.py --aggregate runs/a runs/redo --reruns --results OUT   (a run in runs/redo takes
        the place of the one of that name in runs/a; without --reruns a name found twice is an error)

A study file (YAML) names the shared settings, the tasks (with their data folders), the methods (each with
its own overrides, e.g. learning rates picked on dev) and the seeds. Every run writes its own folder with
config.yaml, log.jsonl and result.json, and placement.json (written here: the `--devices` entry it was given, and
when it started and ended, from which the aggregate counts the runs that shared its GPU);
a run that fails for want of GPU memory waits for another run on its device to end and starts again
(``--oom-retries``, default 2), its failed attempt kept beside it as ``NAME.attempt1``; a folder left by an earlier
unfinished attempt is set aside the same way before a run starts, so no log is ever appended to another's,
unless it left a checkpoint with the same settings: then the run continues from it (`train.resume`). SIGINT
(Ctrl-C) or SIGTERM stops the study: no run starts any more, and each running one saves a checkpoint and stops
(`zofo.interrupt`), so running the study again continues them; a second signal ends them at once;
`--aggregate` reads them all and writes one JSON per run, the accuracy table (mean +- population std over
seeds), dev-accuracy-against-wall-clock curves and the memory table (`study_report.py`).

Grids and templates expand in the YAML: a method with ``grid: {optim.lr: [1.0e-5, 3.0e-5]}`` becomes
``name@lr1e-05`` and ``name@lr3e-05``; a task with ``templates: [mezo, gpt3]`` becomes ``name@mezo`` and
``name@gpt3``.  The aggregate then also writes
* selected.md: per task and method, the grid point with the best mean dev accuracy, and its test accuracy
  (hyper-parameters chosen on dev only); table.md, the curves and speedup.md show a grid method as one
  method (``--curves zo-lora`` included), per task that point. It then lists the choices at an edge of their
  grid (one step further may do better, unless a tie on dev put it there), the chosen points with fewer seeds
  than the method's other choices (with the ``--only`` names that complete them), the chosen points' seeds that
  deploy their untrained start (best dev at step 0), the grid points and the chosen points' seeds that trained
  unequally far (a time cap under varying GPU sharing), and each such choice made again at equal steps;
* prompts.md: per method and task, test accuracy per template and its spread (max - min);
* speedup.md: per task and seed, the wall-clock each curve method needs to reach the reference method's
  (``--reference``, default mezo) final dev accuracy, and the reference's time over it; beside the target, by
  how many dev examples the reference's final accuracy beat its first evaluation (a gain of one says little);
* pareto.png: wall-clock to that accuracy against peak train-step memory, one point per method.
* speedup_across_seeds.md, where a method ran on other seeds than the reference (an ablation on one seed):
  each of its runs timed against the reference's final dev accuracy of every seed, as a threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.report.aggregate import aggregate  # noqa: E402
from zofo.interrupt import handling_signals  # noqa: E402


def grid_points(method: dict) -> list[dict]:
    """A method entry with ``grid`` -> one entry per combination, named name@<key><value>...; a grid key
    "a.x,b.y" sets both keys to each value (e.g. tied upper and lower learning rates)."""
    grid = method.get("grid") or {}
    points = [(method["name"], dict(method.get("set", {})))]
    for key, values in grid.items():
        keys = key.split(",")
        short = keys[0].rsplit(".", 1)[-1]
        points = [(f"{name}{'@' if '@' not in name else '-'}{short}{value}", {**sets, **dict.fromkeys(keys, value)})
                  for name, sets in points for value in values]
    return [{**method, "name": name, "set": sets, "grid": None} for name, sets in points]


def template_tasks(task: dict) -> list[dict]:
    """A task entry with ``templates`` -> one entry per template, named name@template."""
    if not task.get("templates"):
        return [task]
    return [{**task, "name": f"{task['name']}@{t}", "set": {**task.get("set", {}), "data.template": t}}
            for t in task["templates"]]


def expand(study: dict, data_root: str) -> list[dict]:
    """One entry per (task, method, seed): its name and its `--set` overrides."""
    runs = []
    tasks = [t for task in study["tasks"] for t in template_tasks(task)]
    methods = [m for method in study["methods"] for m in grid_points(method)]
    for task in tasks:
        for method in methods:
            for seed in (study.get("seeds", [0]) if method.get("trains", True) else [0]):
                overrides = {**study.get("common", {}), **task.get("set", {}), **method.get("set", {}),
                             "data.task": task["task"], "train.seed": seed}
                if task.get("data"):
                    overrides["data.data"] = str(Path(data_root) / task["data"])
                name = f"{task['name']}__{method['name']}__s{seed}"
                runs.append({"name": name, "task": task["name"], "method": method["name"], "seed": seed,
                             "overrides": overrides})
    return runs


OUT_OF_MEMORY = ("CUDA out of memory", "OutOfMemoryError")


class DeviceTurns:
    """The runs on each device now; a run that ran out of memory waits here for another to end before retrying,
    one waiting run released per run that ends (so those that failed together do not all retry at once)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.active: Counter = Counter()
        self.ended: Counter = Counter()
        self.waiting: Counter = Counter()

    def start(self, device: str | None) -> None:
        with self.changed:
            self.active[device] += 1

    def end(self, device: str | None) -> None:
        with self.changed:
            self.active[device] -= 1
            self.ended[device] += 1
            self.changed.notify_all()

    def wait_for_memory(self, device: str | None) -> bool:
        """Block until another run on ``device`` ends (True), or return False at once if none is running."""
        with self.changed:
            if self.active[device] == 0:
                return False
            ticket = self.ended[device] + self.waiting[device] + 1
            self.waiting[device] += 1
            self.changed.wait_for(lambda: self.ended[device] >= ticket or self.active[device] == 0)
            self.waiting[device] -= 1
            return True


class StudyStop:
    """The study's runs, and whether the study was asked to stop (SIGINT or SIGTERM): then no run starts any more
    and each running one is sent SIGTERM, on which `zofo train` saves a checkpoint and stops."""

    def __init__(self) -> None:
        self.requested, self.signal = False, None
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()

    def run(self, args: list[str], log, env: dict[str, str]) -> int | None:
        """Run ``args`` to its end, its output into ``log``; its exit code, or None if the study was stopped
        first. Its own session: a Ctrl-C at the terminal reaches the study, which passes it on once."""
        with self.lock:
            if self.requested:
                return None
            child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.running.add(child)
        try:
            return child.wait()
        finally:
            with self.lock:
                self.running.discard(child)

    def ask(self, signum: int, frame) -> None:
        """The signal handler: stop starting runs, and pass SIGTERM to the running ones (a second signal: again,
        which ends them at once)."""
        with self.lock:
            self.requested, self.signal = True, signum
            children = list(self.running)
        for child in children:
            child.send_signal(signal.SIGTERM)


def launch(run: dict, out: Path, log_dir: Path, device: str | None = None, turns: DeviceTurns | None = None,
           oom_retries: int = 2, stop: StudyStop | None = None) -> dict:
    """Run one `zofo train` process to completion (on CUDA device ``device`` if given); returns its status. A run
    that runs out of GPU memory while others share its device starts again once one of them has ended, at most
    ``oom_retries`` times. A run that left a checkpoint with the same settings continues from it."""
    run_dir = out / run["name"]
    if (run_dir / "result.json").exists():
        return {"name": run["name"], "status": "done before"}
    turns, stop = turns or DeviceTurns(), stop or StudyStop()
    for attempt in range(1, oom_retries + 2):
        if stop.requested:  # before its folder is touched
            return {"name": run["name"], "status": "not started: the study was stopped"}
        checkpoint = prepared(run, out, log_dir)
        resumed_from = checkpoint_step(checkpoint) if checkpoint else None
        env = run_env(device)
        start = record_placement(run_dir, device, env, run_overrides(run, out))
        turns.start(device)
        try:
            with open(log_dir / f"{run['name']}.log", "a" if checkpoint else "w") as log:
                command = train_command(continued(run, checkpoint), out)
                code = stop.run(command, log, env)
            end_time = record_end(run_dir) if code is not None else None  # before a run waiting for the device starts
        finally:
            turns.end(device)
        if code is None:
            return {"name": run["name"], "status": "not started: the study was stopped"}
        status = {"name": run["name"], "status": "ok" if code == 0 else f"exit {code}",
                  "seconds": round(end_time - start, 1), "attempts": attempt}
        if resumed_from is not None:
            status["resumed_from_step"] = resumed_from
        if code != 0 and stop.requested:
            return {**status, "status": ended(run_dir, code, stop)}
        if code == 0 or attempt > oom_retries or not ran_out_of_memory(log_dir / f"{run['name']}.log"):
            return status
        print(json.dumps({**status, "status": "out of GPU memory: waiting for another run to end"}), flush=True)
        if not turns.wait_for_memory(device):
            return {**status, "status": f"exit {code} (out of GPU memory with no other run on its device)"}
    return status


def prepared(run: dict, out: Path, log_dir: Path) -> Path | None:
    """Ready a run's folder for an attempt: the checkpoint it continues from (`resumable`), or None after setting an
    earlier unfinished attempt aside (`set_aside`) for a clean start."""
    checkpoint = resumable(run, out / run["name"], out)
    if checkpoint is None:
        set_aside(out / run["name"], log_dir)
    return checkpoint


def resumable(run: dict, run_dir: Path, out: Path) -> Path | None:
    """The checkpoint an earlier unfinished attempt of this run left, if it ran with the same settings."""
    checkpoint, placement = run_dir / "checkpoint", run_dir / "placement.json"
    if not (checkpoint / "loop.json").exists() or not placement.exists():
        return None
    before = json.loads(placement.read_text()).get("overrides")
    same = before == json.loads(json.dumps(run_overrides(run, out), default=str))
    return checkpoint if same else None


def listed_state(run: dict, out: Path) -> str:
    """What `--list` says beside a run: done before, to continue from a checkpoint, or nothing (to start)."""
    if (out / run["name"] / "result.json").exists():
        return "  (done before)"
    checkpoint = resumable(run, out / run["name"], out)
    return f"  (continues from step {checkpoint_step(checkpoint)})" if checkpoint else ""


def continued(run: dict, checkpoint: Path | None) -> dict:
    """The run, continued from ``checkpoint`` if there is one."""
    if checkpoint is None:
        return run
    return {**run, "overrides": {**run["overrides"], "train.resume": str(checkpoint)}}


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "loop.json").read_text())["step"])


def train_command(run: dict, out: Path) -> list[str]:
    """The `zofo train` command line of one run."""
    args = [sys.executable, "-m", "zofo.cli", "train"]
    for key, value in run_overrides(run, out).items():
        args += ["--set", f"{key}={value}"]
    return args


def ran_out_of_memory(log_file: Path) -> bool:
    """Whether a run's output ends in a CUDA out-of-memory error."""
    tail = log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""
    return any(marker in tail for marker in OUT_OF_MEMORY)


def set_aside(run_dir: Path, log_dir: Path) -> None:
    """Move an earlier unfinished attempt's folder and log to NAME.attemptK (the first K free), so a new
    attempt starts clean instead of appending to its log."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    k = next(k for k in range(1, 10_000) if not run_dir.with_name(f"{run_dir.name}.attempt{k}").exists())
    run_dir.rename(run_dir.with_name(f"{run_dir.name}.attempt{k}"))
    log = log_dir / f"{run_dir.name}.log"
    if log.exists():
        log.rename(log_dir / f"{run_dir.name}.attempt{k}.log")


def run_overrides(run: dict, out: Path) -> dict:
    """Every `--set` of one run: its folder under ``out``, no progress bar, then the study's overrides."""
    return {"train.output_dir": str(out / run["name"]), "train.progress": "false", **run["overrides"]}


def launch_together(runs: list[dict], out: Path, log_dir: Path, device: str | None = None,
                    stop: StudyStop | None = None) -> list[dict]:
    """Run ``runs`` in one process, each on its own CUDA stream (`study_worker.py`); their statuses. As in
    `launch`, a run continues from the checkpoint an earlier attempt left with the same settings, and a stop
    makes each run save a checkpoint and stop."""
    todo = [r for r in runs if not (out / r["name"] / "result.json").exists()]
    statuses = [{"name": r["name"], "status": "done before"} for r in runs if r not in todo]
    if not todo:
        return statuses
    checkpoints = {r["name"]: prepared(r, out, log_dir) for r in todo}
    env = run_env(device)
    job = [{"name": r["name"], "overrides": run_overrides(continued(r, checkpoints[r["name"]]), out)} for r in todo]
    start = min(record_placement(out / r["name"], device, env, run_overrides(r, out)) for r in todo)
    job_file = log_dir / f"together__{todo[0]['name']}.json"
    job_file.write_text(json.dumps(job, indent=1, default=str))  # values become `--set key=value` text
    stop = stop or StudyStop()
    with open(job_file.with_suffix(".log"), "a") as log:
        code = stop.run([sys.executable, str(Path(__file__).with_name("worker.py")), str(job_file)], log, env)
    if code is None:
        return statuses + [{"name": r["name"], "status": "not started: the study was stopped"} for r in todo]
    seconds = round(max(record_end(out / r["name"]) for r in todo) - start, 1)
    return statuses + [{"name": r["name"], "seconds": seconds, "together": len(todo),
                        "status": ended(out / r["name"], code, stop)} for r in todo]


def ended(run_dir: Path, code: int, stop: StudyStop) -> str:
    """A run's status once its process has exited with ``code``."""
    if (run_dir / "result.json").exists():
        return "ok"
    if not stop.requested:
        return f"failed (exit {code})"
    saved = run_dir / "checkpoint"
    step = checkpoint_step(saved) if (saved / "loop.json").exists() else None
    return f"stopped (exit {code}): " + (f"checkpoint at step {step}, run the study again to continue"
                                         if step is not None else "no checkpoint")


def together_groups(runs: list[dict], placed: list[str | None], size: int) -> list[tuple[list[dict], str | None]]:
    """Runs grouped per device into processes of at most ``size`` runs each, in study order."""
    groups: list[tuple[list[dict], str | None]] = []
    for device in dict.fromkeys(placed):
        mine = [r for r, d in zip(runs, placed, strict=True) if d == device]
        groups += [(mine[i:i + size], device) for i in range(0, len(mine), size)]
    return groups


def run_env(device: str | None) -> dict[str, str]:
    """The environment of one run: ours, with CUDA_VISIBLE_DEVICES set to ``device`` if given."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": device} if device is not None else {**os.environ}


def record_placement(run_dir: Path, device: str | None, env: dict[str, str],
                     overrides: dict | None = None) -> float:
    """placement.json in the run folder: the `--devices` entry the run was given (None: not set), the
    CUDA_VISIBLE_DEVICES it started with, when it started (seconds since the epoch) and its settings (what a
    later attempt compares before it resumes from a checkpoint); returns the start."""
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    placement = {"device": device, "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"), "started": started}
    if overrides is not None:
        placement["overrides"] = overrides
    (run_dir / "placement.json").write_text(json.dumps(placement, default=str) + "\n")
    return started


def record_end(run_dir: Path) -> float:
    """Add when the run ended to its placement.json (with the start: which runs shared its GPU); returns it."""
    placement_file = run_dir / "placement.json"
    placement = {**json.loads(placement_file.read_text()), "ended": time.time()}
    placement_file.write_text(json.dumps(placement) + "\n")
    return placement["ended"]


def selected(runs: list[dict], only: list[str] | None) -> list[dict]:
    """The runs whose name contains one of ``only`` (all if None); a string that matches no run is an error (a
    typo would otherwise run nothing, or less than meant, in silence)."""
    unmatched = [o for o in only or [] if not any(o in r["name"] for r in runs)]
    if unmatched:
        raise SystemExit(f"--only {' '.join(unmatched)}: matches no run of the study; its names look like "
                         f"{runs[0]['name'] if runs else '(none: the study has no runs)'} (task__method__sSEED)")
    return [r for r in runs if only is None or any(o in r["name"] for o in only)]


def run_study(study_file: Path, out: Path, parallel: int, data_root: str, only: list[str] | None,
              seeds: list[int] | None = None, devices: list[str] | None = None, together: int = 1,
              oom_retries: int = 2, listing: bool = False) -> int | None:
    """Launch the study's runs; returns the signal that stopped it, if one did."""
    if oom_retries < 0:
        raise SystemExit(f"--oom-retries {oom_retries}: give 0 (never retry) or more")
    study = yaml.safe_load(study_file.read_text())
    if seeds is not None:
        study["seeds"] = seeds
    runs = selected(expand(study, data_root), only)
    if listing:  # what would run, and what is there already
        for run in runs:
            print(run["name"] + listed_state(run, out))
        print(f"{len(runs)} runs")
        return None
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    (out / "study.yaml").write_text(study_file.read_text())
    print(f"{len(runs)} runs, {parallel} at a time on devices {devices or 'as found'} -> {out}", flush=True)
    placed = [devices[i % len(devices)] if devices else None for i in range(len(runs))]  # round robin
    with stopped_by_signals() as stop, ThreadPoolExecutor(parallel) as pool:
        if together > 1:  # `parallel` processes at once, each training `together` runs side by side
            for statuses in pool.map(lambda g: launch_together(g[0], out, out / "logs", g[1], stop),
                                     together_groups(runs, placed, together)):
                for status in statuses:
                    print(json.dumps(status), flush=True)
        else:
            turns = DeviceTurns()
            for status in pool.map(lambda r, d: launch(r, out, out / "logs", d, turns, oom_retries, stop), runs,
                                   placed):
                print(json.dumps(status), flush=True)
    return stop.signal


@contextmanager
def stopped_by_signals() -> Iterator[StudyStop]:
    """A `StudyStop` that SIGINT and SIGTERM trigger while the study runs (the previous handlers come back after;
    signals reach the main thread only, so elsewhere nothing triggers it)."""
    stop = StudyStop()
    with handling_signals(stop.ask):
        yield stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", type=Path, help="study YAML")
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--parallel", type=int, default=4, help="runs at once (they share the device)")
    parser.add_argument("--data-root", default=os.environ.get("ZOFO_DATA", "../shared/data"))
    parser.add_argument("--only", nargs="+", default=None, help="run only names containing one of these strings")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="CUDA devices to spread the runs over, round robin (e.g. 0 1)")
    parser.add_argument("--together", type=int, default=1,
                        help="runs per process, trained side by side on their own CUDA streams (zofo.concurrent); "
                             "--parallel then counts processes. Peak memory is not recorded for them")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the study's seeds")
    parser.add_argument("--list", action="store_true",
                        help="print the runs that would be launched (after --only and --seeds) and exit")
    parser.add_argument("--oom-retries", type=int, default=2,
                        help="times a run that ran out of GPU memory starts again, each after another run on its "
                             "device has ended (0: never)")
    parser.add_argument("--aggregate", type=Path, nargs="+", default=None,
                        help="aggregate the runs in these folders (several: pooled, e.g. studies of several sessions)")
    parser.add_argument("--reruns", action="store_true",
                        help="with --aggregate: a run found in two folders is taken from the later one (a run made "
                             "again) instead of being refused")
    parser.add_argument("--results", type=Path, default=Path("runs/study-results"))
    parser.add_argument("--curves", default="mezo,zo-lora,bilevel-zofo-lora,fo-lora",
                        help="methods drawn in the dev-against-wall-clock plot, timed in speedup.md and placed in "
                        "pareto.png (those a study did not run are left out)")
    parser.add_argument("--reference", default="mezo", help="the method whose final dev accuracy is the target")
    parser.add_argument("--select-seeds", type=int, nargs="+", default=None,
                        help="choose grid points on the dev accuracy of these seeds only (default: every seed)")
    parser.add_argument("--paired", default=None,
                        help="also write paired.md: this method against every other, paired by task and seed "
                             "(test accuracy differences, peak memory ratios)")
    args = parser.parse_args()
    if args.aggregate:
        aggregate(args.aggregate, args.results, args.curves.split(","), args.reference, args.paired,
                  args.select_seeds, args.reruns)
    else:
        stopped_by = run_study(args.study, args.out, args.parallel, args.data_root, args.only, args.seeds,
                               args.devices, args.together, args.oom_retries, args.list)
        if stopped_by is not None:  # as a process ended by that signal would
            raise SystemExit(128 + stopped_by)


if __name__ == "__main__":
    main()
