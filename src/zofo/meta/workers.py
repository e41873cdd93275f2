"""A meta-test's units in several processes at once: `meta_test(..., workers=N)`, `zofo meta-test --workers N`.

A unit (one task, one seed) of a small model leaves the device idle most of the time: on SmolLM2-135M a
meta-training step kept an H200 busy about 9% of its wall-clock (docs/RESULTS.md section 24), its time going to the
host's Python and kernel launches. N processes on one device then finish about N units in the time of one, until the
device or the host's cores fill. The parent checks everything and writes OUT/protocol.json (and OUT/backbone/) as a
one-process meta-test does, then starts N workers (`python -m zofo.meta.workers OUT/workers/spec.json`). Each
worker takes the next unit that is neither finished nor claimed (a file created exclusively under
OUT/workers/claims/), runs it exactly as one process would and writes it to OUT/units/. The parent shows the units
finished, passes SIGINT / SIGTERM on to the workers (each stops after its current scoring batch or training step,
dropping its unfinished unit), and writes the table once every worker has ended. Each worker's output goes to
OUT/workers/W.log. On several GPUs (`--device auto` or `cuda`), worker W takes GPU W mod their number.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

import zofo
from zofo.errors import ZofoError
from zofo.meta.pool import TaskRef
from zofo.meta.protocol import MetaTestProtocol
from zofo.meta.units import MetaTestInterrupted, slug
from zofo.run.interrupt import TrainingInterrupted, handling_signals

POLL_SECONDS = 1.0


def folder(out_dir: Path) -> Path:
    return Path(out_dir) / "workers"


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


def claimer(out_dir: Path):
    """claim(ref, seed) -> whether this process now owns the unit: the first to create its claim file does."""
    claims = folder(out_dir) / "claims"
    claims.mkdir(parents=True, exist_ok=True)

    def claim(ref: TaskRef, seed: int) -> bool:
        try:
            os.close(os.open(claims / f"{slug(ref.name)}__seed{seed}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    return claim


def devices(device: str, n: int) -> list[str]:
    """Worker W's device: GPU W mod their number where `device` names no one GPU and several are visible."""
    if device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count > 1:
            return [f"cuda:{w % count}" for w in range(n)]
    return [device] * n


def run_workers(spec: Path, n: int, device: str, units: Sequence[Path], progress: bool) -> None:
    """Start n workers on `spec`, wait for them all; raise `MetaTestInterrupted` after a signal (passed on to every
    worker) and ZofoError naming a worker that failed. Finished units stay in OUT/units/ either way."""
    out_dir = Path(json.loads(spec.read_text())["out"])
    shutil.rmtree(folder(out_dir) / "claims", ignore_errors=True)  # an interrupted worker's unit is free again
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(zofo.__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    logs = [folder(out_dir) / f"{w}.log" for w in range(n)]
    processes = []
    for w, where in enumerate(devices(device, n)):
        with open(logs[w], "w") as log:  # their own session: a terminal's Ctrl-C reaches them once, from us
            processes.append(subprocess.Popen([sys.executable, "-m", "zofo.meta.workers", str(spec), where],
                                              stdout=log, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
    received: list[int] = []

    def pass_on(signum: int, frame) -> None:
        received.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    bar = tqdm(total=len(units), disable=not progress, desc=f"meta-test ({n} workers)", dynamic_ncols=True)
    with handling_signals(pass_on):
        while any(process.poll() is None for process in processes):
            bar.n = sum(unit.is_file() for unit in units)
            bar.refresh()
            time.sleep(POLL_SECONDS)
    done = sum(unit.is_file() for unit in units)
    bar.n = done
    bar.close()
    if received:
        raise MetaTestInterrupted(done, len(units), out_dir, received[0])
    for w, process in enumerate(processes):
        if process.returncode != 0:
            lines = logs[w].read_text(errors="replace").strip().splitlines()
            raise ZofoError(f"meta-test worker {w} of {n} failed (exit {process.returncode}): "
                            f"{lines[-1] if lines else 'no output'} (its output: {logs[w]})",
                            f"{done} of {len(units)} task-seed evaluations are kept; fix the cause and run the same "
                            "command again to continue")


def main(argv: list[str] | None = None) -> int:
    """A worker: `python -m zofo.meta.workers SPEC DEVICE` (the entry point imports the meta-test it runs)."""
    from zofo.meta.metatest import meta_test

    spec_file, device = argv if argv is not None else sys.argv[1:]
    spec = read_spec(Path(spec_file))
    try:
        meta_test(spec["refs"], spec["model"], spec["protocol"], Path(spec["out"]), device=device,
                  dtype=spec["dtype"], progress=False, as_worker=True)
    except TrainingInterrupted as stop:
        print(f"zofo: {stop}", file=sys.stderr)
        return stop.exit_code
    except ZofoError as err:  # one line, as the command prints it: the parent quotes a worker's last line
        print("zofo: error: " + " ".join(str(err).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
