"""Launching a study's runs: one `zofo train` process per run (or several runs a process), sharing GPUs.

Runs share a GPU to keep it busy, so a run may run out of memory: it waits for another run on its device to end and
starts again, its failed attempt set aside as NAME.attemptK (no log is appended to another's). A stop (SIGINT or
SIGTERM) starts no more runs and makes each running one save a checkpoint; a later attempt with the same settings
continues from it. A run still running `--stop-grace` seconds after the stop reached it (a step that never ends) has
its threads' stacks written to its log and is killed, so that it neither holds the GPU nor keeps the study waiting.
A start deadline (`--start-until`) starts no run after it and lets the running ones finish: the last call of a
session on a machine that will not come back should end with no part-done run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zofo.atomic import restored
from zofo.run.interrupt import handling_signals

#: how a run's output ends when it ran out of GPU memory: torch's own error, and the libraries' ways of saying a failed
#: allocation (cuDNN called it an internal error when a full card refused its workspace, 2026-12-07)
OUT_OF_MEMORY = ("CUDA out of memory", "OutOfMemoryError", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
                 "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_INTERNAL_ERROR")
STOP_GRACE = 300.0   # seconds a run has, once a stop reached it, to finish its step, save its checkpoint and end


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
    and each running one is sent SIGTERM, on which `zofo train` saves a checkpoint and stops; one still running
    ``grace`` seconds later is killed (`wait`). With ``start_until`` (seconds from now) no run starts after that
    time either, and the running ones go on to their end."""

    def __init__(self, start_until: float | None = None, grace: float = STOP_GRACE) -> None:
        self.requested, self.signal, self.requested_at = False, None, None
        self.grace = grace
        self.ended_by_us: set[str] = set()  # the logs (names) of the runs `wait` ended
        self.start_until = start_until
        self.deadline = None if start_until is None else time.monotonic() + start_until
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()

    def closed(self) -> str | None:
        """Why no run may start now, or None."""
        if self.requested:
            return "the study was stopped"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return f"past --start-until {self.start_until:g} s"
        return None

    def run(self, args: list[str], log, env: dict[str, str]) -> int | None:
        """Run ``args`` to its end, its output into ``log``; its exit code, or None if no run may start any more
        (a stop, or past the start deadline). Its own session: a Ctrl-C at the terminal reaches the study, which
        passes it on once."""
        with self.lock:
            if self.closed():
                return None
            child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.running.add(child)
        try:
            return self.wait(child, log)
        finally:
            with self.lock:
                self.running.discard(child)

    def wait(self, child: subprocess.Popen, log) -> int:
        """``child``'s exit code. One still running `grace` seconds after the stop was asked for is asked for its
        threads' stacks (SIGUSR1: `zofo.run.interrupt.stacks_on_request` writes them into its log; a process without
        that handler ends on it) and then killed with its process group; its log's name goes to `ended_by_us`."""
        while True:
            try:
                return child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if self.requested_at is not None and time.monotonic() - self.requested_at > self.grace:
                    break
        child.send_signal(signal.SIGUSR1)
        try:
            code = child.wait(timeout=1.0)  # the stacks are written from the signal handler, at once
        except subprocess.TimeoutExpired:
            kill_group(child)
            code = child.wait()
        if code in (-signal.SIGKILL, -signal.SIGUSR1):  # else it ended by itself just then
            self.ended_by_us.add(log.name)
            log.write(f"\nzofo study: still running {self.grace:g} s after the stop: asked for its threads' stacks "
                      "(above, where it could write them) and ended\n")
            log.flush()
        return code

    def ask(self, signum: int, frame) -> None:
        """The signal handler: stop starting runs, and pass SIGTERM to the running ones (a second signal: again,
        which ends them at once)."""
        with self.lock:
            self.requested, self.signal = True, signum
            self.requested_at = self.requested_at or time.monotonic()  # the grace counts from the first signal
            children = list(self.running)
        for child in children:
            child.send_signal(signal.SIGTERM)


def kill_group(child: subprocess.Popen) -> None:
    """SIGKILL to ``child``'s process group (a run has its own session, so the group is its and its helpers'), or to
    ``child`` alone where that fails."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()


def launch(run: dict, out: Path, log_dir: Path, device: str | None = None, turns: DeviceTurns | None = None,
           oom_retries: int = 2, stop: StudyStop | None = None) -> dict:
    """Run one `zofo train` process to completion (on CUDA device ``device`` if given); returns its status. A run
    that runs out of GPU memory while others share its device starts again once one of them has ended, at most
    ``oom_retries`` times. A run that left a checkpoint with the same settings continues from it."""
    run_dir = out / run["name"]
    if (run_dir / "result.json").exists():
        return {"name": run["name"], "status": "done before"}
    turns, stop = turns or DeviceTurns(), stop or StudyStop()
    status = {"name": run["name"]}
    log_file = log_dir / f"{run['name']}.log"  # an earlier attempt's is set aside (`prepared`) before this one's starts
    for attempt in range(1, oom_retries + 2):
        if why := stop.closed():  # before its folder is touched (a retry keeps the failed attempt's status)
            return {**status, "status": not_started(attempt, why)}
        checkpoint = prepared(run, out, log_dir)
        resumed_from = checkpoint_step(checkpoint) if checkpoint else None
        env = run_env(device)
        start = record_placement(run_dir, device, env, run_overrides(run, out))
        turns.start(device)
        try:
            with open(log_file, "a" if checkpoint else "w") as log:
                command = train_command(continued(run, checkpoint), out)
                code = stop.run(command, log, env)
            end_time = record_end(run_dir) if code is not None else None  # before a run waiting for the device starts
        finally:
            turns.end(device)
        if code is None:
            return {**status, "status": not_started(attempt, stop.closed())}
        status = {"name": run["name"], "status": "ok" if code == 0 else f"exit {code}",
                  "seconds": round(end_time - start, 1), "attempts": attempt}
        if resumed_from is not None:
            status["resumed_from_step"] = resumed_from
        if code != 0 and stop.requested:
            return {**status, "status": ended(run_dir, code, stop, log_file)}
        if code == 0 or attempt > oom_retries or not ran_out_of_memory(log_file):
            return status
        if why := stop.closed():  # no retry is coming: do not wait for one
            return {**status, "status": f"exit {code} (out of GPU memory), not started again: {why}"}
        print(json.dumps({**status, "status": "out of GPU memory: waiting for another run to end"}), flush=True)
        if not turns.wait_for_memory(device):
            return {**status, "status": f"exit {code} (out of GPU memory with no other run on its device)"}
    return status


def not_started(attempt: int, why: str | None) -> str:
    """The status of an attempt that no longer starts (a first one, or a retry after running out of memory)."""
    return f"not {'started' if attempt == 1 else 'started again'}: {why}"


def prepared(run: dict, out: Path, log_dir: Path) -> Path | None:
    """Ready a run's folder for an attempt: the checkpoint it continues from (`resumable`), or None after setting an
    earlier unfinished attempt aside (`set_aside`) for a clean start."""
    checkpoint = resumable(run, out / run["name"], out)
    if checkpoint is None:
        set_aside(out / run["name"], log_dir)
    return checkpoint


def resumable(run: dict, run_dir: Path, out: Path) -> Path | None:
    """The checkpoint an earlier unfinished attempt of this run left, if it ran with the same settings."""
    checkpoint, placement = restored(run_dir / "checkpoint"), run_dir / "placement.json"
    if not (checkpoint / "loop.json").exists() or not placement.exists():
        return None
    before = json.loads(placement.read_text()).get("overrides")
    return checkpoint if before is not None and not changed_settings(before, run, out) else None


def changed_settings(before: dict, run: dict, out: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """The keys (sorted) whose value in ``before`` (a placement.json's overrides) differs from the run's settings
    now, compared as placement.json stores them; ``ignore``: keys left out of the comparison."""
    now = json.loads(json.dumps(run_overrides(run, out), default=str))
    return [k for k in sorted(set(before) | set(now)) if k not in ignore and before.get(k) != now.get(k)]


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
    """Run ``runs`` in one process, each on its own CUDA stream (`worker.py`); their statuses. As in
    `launch`, a run continues from the checkpoint an earlier attempt left with the same settings, and a stop
    makes each run save a checkpoint and stop."""
    todo = [r for r in runs if not (out / r["name"] / "result.json").exists()]
    statuses = [{"name": r["name"], "status": "done before"} for r in runs if r not in todo]
    stop = stop or StudyStop()
    if not todo:
        return statuses
    if why := stop.closed():  # before any folder is touched
        return statuses + [{"name": r["name"], "status": f"not started: {why}"} for r in todo]
    checkpoints = {r["name"]: prepared(r, out, log_dir) for r in todo}
    env = run_env(device)
    job = [{"name": r["name"], "overrides": run_overrides(continued(r, checkpoints[r["name"]]), out)} for r in todo]
    start = min(record_placement(out / r["name"], device, env, run_overrides(r, out)) for r in todo)
    job_file = log_dir / f"together__{todo[0]['name']}.json"
    job_file.write_text(json.dumps(job, indent=1, default=str))  # values become `--set key=value` text
    log_file = job_file.with_suffix(".log")
    with open(log_file, "a") as log:
        code = stop.run([sys.executable, str(Path(__file__).with_name("worker.py")), str(job_file)], log, env)
    if code is None:
        return statuses + [{"name": r["name"], "status": f"not started: {stop.closed()}"} for r in todo]
    seconds = round(max(record_end(out / r["name"]) for r in todo) - start, 1)
    return statuses + [{"name": r["name"], "seconds": seconds, "together": len(todo),
                        "status": ended(out / r["name"], code, stop, log_file)} for r in todo]


def ended(run_dir: Path, code: int, stop: StudyStop, log: Path) -> str:
    """A run's status once its process (output in ``log``) has exited with ``code``."""
    if (run_dir / "result.json").exists():
        return "ok"
    if not stop.requested:
        return f"failed (exit {code})"
    saved = run_dir / "checkpoint"
    step = checkpoint_step(saved) if (saved / "loop.json").exists() else None
    how = (f"killed, still running {stop.grace:g} s after the stop (its threads' stacks are in its log)"
           if str(log) in stop.ended_by_us else f"stopped (exit {code})")
    return f"{how}: " + (f"checkpoint at step {step}, run the study again to continue"
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


@contextmanager
def stopped_by_signals(start_until: float | None = None, grace: float = STOP_GRACE) -> Iterator[StudyStop]:
    """A `StudyStop` that SIGINT and SIGTERM trigger while the study runs (the previous handlers come back after;
    signals reach the main thread only, so elsewhere nothing triggers it)."""
    stop = StudyStop(start_until, grace)
    with handling_signals(stop.ask):
        yield stop
