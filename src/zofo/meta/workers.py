"""A meta-test's units in several processes at once: `meta_test(..., workers=N)`, `zofo meta-test --workers N`.

A unit (one task, one seed) of a small model leaves the device partly idle, so N processes on one device can finish
more units in the time of one, until the device or the host's cores fill. On one H100 in float32 the gain is small
(docs/RESULTS.md section 26): one worker's SmolLM2-135M units keep a kernel running 59% of the time, and without MPS
the device time-slices between processes, so 3 workers gave 1.22x and 6 gave 1.30x. With several GPUs worker W takes
GPU W mod their number; that gain is not measured.

The parent holds the folder's lock (`zofo.meta.units.locked`), checks everything and writes OUT/protocol.json (and
OUT/backbone/) as a one-process meta-test does, then starts the workers. Each worker takes the next unit that is
neither finished nor claimed (a file created exclusively under OUT/workers/claims/), runs it exactly as one process
would and writes it to OUT/units/. The parent:
- shows the units finished, and says at once when a worker fails;
- passes SIGINT / SIGTERM on to the workers and writes OUT/workers/stop, which a worker that missed the signal (it
  came before its handlers were set) reads before its next unit; a second signal is passed on too, and workers still
  running 10 s later are killed;
- writes the table once every worker has ended (and all units are there).
The workers share the parent's lock (an inherited descriptor: a second command on the folder is refused while any of
them runs) and a pipe whose end tells a worker that its parent is gone (killed, or its terminal closed): it then
stops as on SIGTERM. Each worker's output goes to OUT/workers/W.log. On several GPUs (`--device auto` or `cuda`),
worker W takes GPU W mod their number; on the CPU, the cores are shared out (OMP_NUM_THREADS, unless set).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from zofo.errors import ZofoError
from zofo.meta.pool import TaskRef
from zofo.meta.protocol import MetaTestProtocol
from zofo.meta.units import MetaTestInterrupted, finished, slug, write_whole
from zofo.run.interrupt import TrainingInterrupted, handling_signals

POLL_SECONDS = 1.0
KILL_AFTER_SECONDS = 10.0  # after a second signal
# the worker's entry: the current directory leaves the import path first (`python -m` would put it there, so a
# stray tqdm.py beside the user would shadow the real one in the workers only); Ctrl-C during its imports is no error
ENTRY = "\n".join(["import sys",
                   "if sys.path and sys.path[0] == '':",
                   "    del sys.path[0]",
                   "try:",
                   "    from zofo.meta.workers import main",
                   "except KeyboardInterrupt:",
                   "    sys.exit('zofo: interrupted before its first unit')",
                   "sys.exit(main())"])


def folder(out_dir: Path) -> Path:
    return Path(out_dir) / "workers"


def check(workers: int, as_worker: bool) -> None:
    """Refuse a worker count that cannot run."""
    if workers < 1:
        raise ZofoError(f"meta-test --workers must be >= 1, got {workers}", "give --workers 1 or more")
    if workers > 1 and (as_worker or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise ZofoError("meta-test --workers starts processes of its own and cannot run under torchrun (or inside "
                        "a worker)", "give either --workers or torchrun, not both")


def write_spec(out_dir: Path, refs: Sequence[TaskRef], model: str, protocol: MetaTestProtocol, dtype: str) -> Path:
    """What every worker needs to run the same meta-test (its device comes on its command line)."""
    spec = folder(out_dir) / "spec.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"refs": [dataclasses.asdict(ref) for ref in refs], "model": model,
                                "protocol": dataclasses.asdict(protocol), "dtype": dtype, "out": str(out_dir)},
                               indent=1) + "\n")
    return spec


def read_spec(spec: Path) -> dict:
    data = json.loads(Path(spec).read_text())
    protocol = {**data["protocol"], "seeds": tuple(data["protocol"]["seeds"])}
    return {**data, "refs": [TaskRef(**ref) for ref in data["refs"]], "protocol": MetaTestProtocol(**protocol)}


class Share:
    """A worker's view of the folder: claim a unit (the first process to create its claim file owns it), and the
    signal the parent asked every worker to stop on, if any."""

    def __init__(self, out_dir: Path):
        self.claims, self.stop_file = folder(out_dir) / "claims", folder(out_dir) / "stop"
        self.claims.mkdir(parents=True, exist_ok=True)

    def claim(self, ref: TaskRef, seed: int) -> bool:
        try:
            os.close(os.open(self.claims / f"{slug(ref.name)}__seed{seed}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def stop_signal(self) -> int | None:
        if not self.stop_file.is_file():
            return None
        text = self.stop_file.read_text().strip()
        return int(text) if text.isdigit() else int(signal.SIGTERM)

    def ask_to_stop(self, signum: int) -> None:
        write_whole(self.stop_file, f"{signum}\n")  # a worker reading it never meets an empty file


def devices(device: str, n: int) -> list[str]:
    """Worker W's device: GPU W mod their number where `device` names no one GPU and several are visible."""
    if device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count > 1:
            return [f"cuda:{w % count}" for w in range(n)]
    return [device] * n


def environment(n: int) -> dict[str, str]:
    """The workers' environment: zofo importable as the parent imports it; the cores shared out unless the user
    chose how many threads."""
    source = str(Path(__file__).resolve().parents[2])  # the folder zofo is imported from (src/ in a checkout)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // n)))
    return env


def failure(w: int, n: int, returncode: int, log: Path) -> str:
    """Why worker w ended: the signal that killed it, else its last `zofo:` line (its output is mostly progress
    bars), else its last line."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:  # a signal the enum does not name (a real-time one)
            name = f"signal {-returncode}"
        why = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        said = [line for line in lines if line.startswith("zofo:")]
        why = f"exit {returncode}: " + (said or lines or ["no output"])[-1]
    return f"meta-test worker {w} of {n} failed ({why}; its output: {log})"


def run_workers(spec: Path, n: int, device: str, units: Sequence[tuple[Path, TaskRef]], progress: bool,
                lock_fd: int) -> None:
    """Run the units not yet finished in min(n, their number) workers on `spec`; wait for them all. Raises
    `MetaTestInterrupted` after a signal (unless every unit got done) and ZofoError naming a worker that failed.
    Finished units stay in OUT/units/ either way. `lock_fd`: the folder's lock, shared with the workers."""
    out_dir = Path(json.loads(spec.read_text())["out"])
    n = min(n, len(units) - count_finished(units))
    if n == 0:
        return
    shutil.rmtree(folder(out_dir) / "claims", ignore_errors=True)  # the lock says no worker of ours is left
    share = Share(out_dir)
    share.stop_file.unlink(missing_ok=True)
    parent_end, worker_end = os.pipe()[::-1]  # (write, read): the workers see EOF when the parent is gone
    processes: list[subprocess.Popen] = []
    received: list[tuple[int, float]] = []

    def pass_on(signum: int, frame) -> None:
        received.append((signum, time.monotonic()))
        share.ask_to_stop(received[0][0])
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    logs, env = [folder(out_dir) / f"{w}.log" for w in range(n)], environment(n)
    bar = tqdm(total=len(units), disable=not progress, desc=f"meta-test ({n} workers)", dynamic_ncols=True)
    try:
        with handling_signals(pass_on):
            try:
                for w, where in enumerate(devices(device, n)):
                    if received:  # no more workers after a signal
                        break
                    with open(logs[w], "a") as log:  # their own session: a terminal's Ctrl-C reaches them once
                        processes.append(subprocess.Popen(
                            [sys.executable, "-c", ENTRY, str(spec), where, str(worker_end)], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            pass_fds=(worker_end, lock_fd)))
            finally:
                os.close(worker_end)
            watch(processes, logs, units, bar, received)
    finally:
        os.close(parent_end)
        bar.close()
    done = count_finished(units)
    if received and done < len(units):
        raise MetaTestInterrupted(done, len(units), out_dir, received[0][0])
    for w, process in enumerate(processes):
        if process.returncode != 0 and not received:
            raise ZofoError(failure(w, n, process.returncode, logs[w]),
                            f"{done} of {len(units)} task-seed evaluations are kept; fix the cause and run the same "
                            "command again to continue")


def count_finished(units: Sequence[tuple[Path, TaskRef]]) -> int:
    return sum(finished(file, ref) for file, ref in units)


def watch(processes: list[subprocess.Popen], logs: list[Path], units: Sequence[tuple[Path, TaskRef]], bar: tqdm,
          received: list[tuple[int, float]]) -> None:
    """Until every worker has ended: the progress bar, a line as soon as a worker fails, and SIGKILL for workers
    still running KILL_AFTER_SECONDS after a second signal."""
    told: set[int] = set()
    while [process for process in processes if process.poll() is None]:  # every one polled, not up to the first
        bar.n = count_finished(units)
        bar.refresh()
        for w, process in enumerate(processes):
            if process.returncode not in (None, 0) and w not in told and not received:
                told.add(w)
                tqdm.write(f"zofo: {failure(w, len(processes), process.returncode, logs[w])}; the others go on",
                           file=sys.stderr)
        if len(received) > 1 and time.monotonic() - received[1][1] > KILL_AFTER_SECONDS:
            for process in processes:
                if process.poll() is None:
                    process.kill()
        time.sleep(POLL_SECONDS)
    bar.n = count_finished(units)


def watch_parent(fd: int) -> None:
    """SIGTERM to this worker once the parent is gone (the pipe's other end closed): it stops after its current
    scoring batch or training step, as on the parent's own signal."""
    def wait() -> None:
        while os.read(fd, 1):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """A worker: SPEC DEVICE PIPE_FD (started by `run_workers`). It imports the meta-test it runs."""
    from zofo.meta.metatest import meta_test

    spec_file, device, pipe = argv if argv is not None else sys.argv[1:]
    try:
        watch_parent(int(pipe))
        spec = read_spec(Path(spec_file))
        meta_test(spec["refs"], spec["model"], spec["protocol"], Path(spec["out"]), device=device,
                  dtype=spec["dtype"], progress=False, as_worker=True)
    except TrainingInterrupted as stop:
        print(f"zofo: {stop}", file=sys.stderr)
        return stop.exit_code
    except ZofoError as err:  # one line, as the command prints it: the parent quotes a worker's last such line
        print("zofo: error: " + " ".join(str(err).split()), file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # SIGINT before the meta-test set its handlers, or a second one: at once
        print("zofo: interrupted at once (its unfinished unit is dropped)", file=sys.stderr)
        return 130
    return 0
