"""Run logs: one JSON line per event, TensorBoard scalars, and peak device memory per phase."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from zofo.errors import ZofoError

#: the clocks of a log's records, named as an axis
CLOCKS = {"train_time": "training seconds (evaluations left out)", "time": "wall-clock seconds"}


def shared_clock(records: Iterable[dict]) -> str:
    """The clock every one of `records` carries: "train_time" (evaluations and checkpoints left out) when all
    have it, else "time" (wall-clock; logs from before train_time)."""
    records = list(records)
    return "train_time" if records and all("train_time" in r for r in records) else "time"


class RunLogger:
    """Appends `{"step", "phase", "time", "train_time", ...}` lines to log.jsonl and mirrors numbers to
    TensorBoard. `time` is the run's wall-clock; `train_time` leaves out what ran `off_the_clock` (evaluations
    and checkpoints), so how often a run is evaluated does not move its training curve. ``writes`` False (ranks
    other than 0 of a data-parallel run): the clocks run, nothing is written."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, writes: bool = True):
        self.path = run_dir / "log.jsonl"
        self.writes = writes
        self.start = time.time()
        self.offset = 0.0
        self.off_clock = 0.0                  # seconds spent off the clock so far
        self.paused_at: float | None = None   # when the current off-the-clock stretch began
        self.writer = None
        if tensorboard and writes:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, phase: str, **values: float | int | str | None) -> None:
        if not self.writes:
            return
        record = {"step": step, "phase": phase, "time": round(self.elapsed(), 3),
                  "train_time": round(self.train_elapsed(), 3), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{phase}/{key}", value, step)

    def resume_from(self, step: int, elapsed: float, off_clock: float = 0.0) -> None:
        """Continue an interrupted run from its checkpoint at ``step``: its clocks go on from there, and records
        of later steps (a run killed after its last checkpoint: work that is now done again) leave log.jsonl."""
        self.offset, self.off_clock = elapsed, off_clock
        if not self.writes or not self.path.exists():
            return
        # a finished run resumed to go further is tested again at its new end: its old test record goes; written
        # back as `log` writes records, a line cut short at the end (`log_records`) goes too
        kept = [r for r in log_records(self.path) if r["step"] <= step and r["phase"] != "test"]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def elapsed(self) -> float:
        """Wall-clock seconds of the run."""
        return self.offset + time.time() - self.start

    def train_elapsed(self) -> float:
        """Wall-clock seconds of the run less those spent off the clock (frozen while off it)."""
        now = time.time()
        current = now - self.paused_at if self.paused_at is not None else 0.0
        return self.offset + now - self.start - self.off_clock - current

    @contextlib.contextmanager
    def off_the_clock(self) -> Iterator[None]:
        """What runs inside does not count towards `train_time` (nested blocks count once)."""
        if self.paused_at is not None:
            yield
            return
        self.paused_at = time.time()
        try:
            yield
        finally:
            self.off_clock += time.time() - self.paused_at
            self.paused_at = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_log(run_dir: Path) -> list[dict]:
    return log_records(Path(run_dir) / "log.jsonl")


def log_records(path: Path) -> list[dict]:
    """The records of a log.jsonl. A last line cut short (a process killed, or a disk full, in the middle of a
    write) is left out; a damaged line elsewhere is refused with its line number."""
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ZofoError(f"{path}:{number}: not a log record ({line[:60]!r})",
                            "the log is damaged; remove the line (or the run) and try again") from None
    return records


class PeakMemory:
    """Peak device memory (MiB) per phase name: allocated by tensors (`peaks`) and reserved by torch's caching
    allocator (`reserved`: cached blocks and CUDA graphs' private pools too, what the process holds besides its CUDA
    context, so what decides how many runs fit on one GPU). CUDA only (empty elsewhere), and only for a run that has
    its process to itself (``alone``): torch counts the peak per process."""

    def __init__(self, device: torch.device, alone: bool = True):
        self.cuda = device.type == "cuda" and alone
        self.peaks: dict[str, float] = {}
        self.reserved: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        yield
        if self.cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
            self.peaks[name] = max(self.peaks.get(name, 0.0), peak)
            reserved = torch.cuda.max_memory_reserved() / 2**20
            self.reserved[name] = max(self.reserved.get(name, 0.0), reserved)
