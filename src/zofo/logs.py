"""Run logs: one JSON line per event, TensorBoard scalars, and peak device memory per phase."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch


class RunLogger:
    """Appends `{"step", "phase", "time", ...}` lines to log.jsonl and mirrors numbers to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "log.jsonl"
        self.start = time.time()
        self.offset = 0.0
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, phase: str, **values: float | int | str | None) -> None:
        record = {"step": step, "phase": phase, "time": round(self.offset + time.time() - self.start, 3),
                  **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{phase}/{key}", value, step)

    def resume_from(self, elapsed: float) -> None:
        """Continue the wall-clock axis of an interrupted run."""
        self.offset = elapsed

    def elapsed(self) -> float:
        return self.offset + time.time() - self.start

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class PeakMemory:
    """Peak allocated device memory (MiB) per phase name; CUDA only (None elsewhere), and only for a run that has
    its process to itself (``alone``): torch counts the peak per process."""

    def __init__(self, device: torch.device, alone: bool = True):
        self.cuda = device.type == "cuda" and alone
        self.peaks: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        yield
        if self.cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
            self.peaks[name] = max(self.peaks.get(name, 0.0), peak)
