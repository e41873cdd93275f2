"""A meta-test's units: one (task, seed) each, written to OUT/units/TASK/seedS.json once finished, so that a stopped
meta-test (one process or several workers) continues from them."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from zofo.meta.pool import TaskRef
from zofo.run.interrupt import TrainingInterrupted


class MetaTestInterrupted(TrainingInterrupted):
    """A meta-test stopped on a signal; its finished evaluations are kept and a rerun continues from them."""

    def __init__(self, done: int, total: int, out_dir: Path, signum: int):
        self.step, self.checkpoint, self.signum = done, Path(out_dir), signum
        Exception.__init__(self, f"interrupted by {signal.Signals(signum).name} after {done} of {total} task-seed "
                                 f"evaluations; they are kept in {Path(out_dir) / 'units'} (run the same command "
                                 "again to continue)")


def unit_file(out_dir: Path, ref: TaskRef, seed: int) -> Path:
    return Path(out_dir) / "units" / slug(ref.name) / f"seed{seed}.json"


def slug(name: str) -> str:
    """A task name as one folder name: logical_deduction/three_objects -> logical_deduction__three_objects."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("/", "__"))


def finished(file: Path, ref: TaskRef) -> bool:
    """Whether this (task, seed) was evaluated already, on the same task data with the same template (a unit
    written before units recorded their template had none)."""
    if not file.is_file():
        return False
    unit = json.loads(file.read_text())
    return unit.get("data") == ref.data and unit.get("template") == ref.template


def write_unit(file: Path, result: dict) -> None:
    write_whole(file, json.dumps(result, indent=1) + "\n")


def write_whole(file: Path, text: str) -> None:
    """Write `text` whole or not at all (a rename), so that a stop or a reader never meets half a file; the partial
    file is named by the process, so that no two writers share it."""
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(f"{file.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, file)
