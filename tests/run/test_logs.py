"""RunLogger's clocks: wall-clock `time`, and `train_time` without what ran off the clock."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import pytest
import torch

from zofo.errors import ZofoError
from zofo.run import logs
from zofo.run.loop import LoopSettings, LoopState, train_loop


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_train_time_leaves_out_what_ran_off_the_clock(tmp_path, monkeypatch):
    clock = FakeClock(100.0)
    monkeypatch.setattr(logs, "time", clock)
    logger = logs.RunLogger(tmp_path, tensorboard=False)
    clock.now = 103.0
    logger.log(1, "train")
    with logger.off_the_clock():
        clock.now = 106.0
        logger.log(1, "dev")                 # frozen at the start of the evaluation
        with logger.off_the_clock():         # nested: counted once
            clock.now = 108.0
    clock.now = 110.0
    logger.log(2, "train")
    assert [(r["time"], r["train_time"]) for r in records(tmp_path)] == [(3.0, 3.0), (6.0, 3.0), (10.0, 5.0)]
    assert logger.off_clock == 5.0


def test_a_resumed_logger_continues_both_clocks(tmp_path, monkeypatch):
    clock = FakeClock(50.0)
    monkeypatch.setattr(logs, "time", clock)
    logger = logs.RunLogger(tmp_path, tensorboard=False)
    logger.resume_from(step=2, elapsed=10.0, off_clock=4.0)
    clock.now = 52.0
    logger.log(3, "train")
    assert (records(tmp_path)[-1]["time"], records(tmp_path)[-1]["train_time"]) == (12.0, 8.0)


def test_resuming_drops_the_records_of_steps_after_the_checkpoint(tmp_path):
    """A run killed at step 5 after its checkpoint at step 3 logged steps 4-5 that the resumed run does again."""
    logger = logs.RunLogger(tmp_path, tensorboard=False)
    for step, phase in ((0, "dev"), (2, "train"), (3, "train"), (3, "dev"), (4, "train"), (5, "train")):
        logger.log(step, phase)
    logs.RunLogger(tmp_path, tensorboard=False).resume_from(step=3, elapsed=1.0)
    assert [(r["step"], r["phase"]) for r in records(tmp_path)] == [(0, "dev"), (2, "train"), (3, "train"),
                                                                     (3, "dev")]


def test_a_line_cut_short_at_the_end_is_left_out_a_damaged_one_elsewhere_refused_and_an_old_test_dropped(tmp_path):
    """A kill in the middle of a write leaves half a last line: resume and plot read the rest (they raised a raw
    JSONDecodeError). A finished run resumed to go further loses its old test record (it is tested again)."""
    logger = logs.RunLogger(tmp_path, tensorboard=False)
    for step, phase in ((0, "dev"), (3, "train"), (3, "dev"), (3, "test")):
        logger.log(step, phase)
    with (tmp_path / "log.jsonl").open("a") as f:
        f.write('{"step": 4, "phase": "tr')
    assert [(r["step"], r["phase"]) for r in logs.read_log(tmp_path)] == [(0, "dev"), (3, "train"), (3, "dev"),
                                                                         (3, "test")]
    logs.RunLogger(tmp_path, tensorboard=False).resume_from(step=3, elapsed=1.0)
    assert [(r["step"], r["phase"]) for r in records(tmp_path)] == [(0, "dev"), (3, "train"), (3, "dev")]
    text = (tmp_path / "log.jsonl").read_text()
    (tmp_path / "log.jsonl").write_text("not json\n" + text)
    with pytest.raises(ZofoError, match=r"log.jsonl:1: not a log record \('not json'\) \(the log is damaged"):
        logs.read_log(tmp_path)


class StubMethod:
    """Just enough of a Method for the loop: each step takes one second of `clock`."""

    def __init__(self, clock: FakeClock):
        embedding = torch.nn.Embedding(4, 2)
        self.clock, self.model = clock, SimpleNamespace(get_input_embeddings=lambda: embedding)
        self.weight = embedding.weight
        self.batches = SimpleNamespace(state_dict=dict)

    def step(self, step: int) -> dict:
        self.clock.now += 1.0
        return {"loss": 1.0}

    def flush(self) -> None:
        pass

    def deployed(self):
        return contextlib.nullcontext()

    def trainable(self) -> dict:
        return {"w": self.weight}

    def seed_trajectory(self) -> None:
        return None

    def state_dict(self) -> dict:
        return {}


@pytest.mark.parametrize("budget, steps", [({"max_seconds": 20}, 6), ({"max_train_seconds": 20}, 21)])
def test_time_budgets_stop_training_on_their_clock(tmp_path, monkeypatch, budget, steps):
    """Steps take 1 s and evaluations (every 2 steps, and at step 0) 5 s. On the wall-clock, step k ends at
    5 + k + 5 floor(k / 2): first past 20 s after step 6. Without evaluations, step 21."""
    clock = FakeClock(0.0)
    monkeypatch.setattr(logs, "time", clock)

    def evaluate_dev() -> dict:
        clock.now += 5.0
        return {"accuracy": 0.5}

    settings = LoopSettings(steps=100, eval_every=2, log_every=1, progress=False, **budget)
    state = train_loop(StubMethod(clock), evaluate_dev, tmp_path, settings, logs.RunLogger(tmp_path, tensorboard=False),
                       logs.PeakMemory(torch.device("cpu")), LoopState())
    assert state.step == steps


def test_peak_memory_keeps_the_largest_allocated_and_reserved_figure_of_each_phase(monkeypatch):
    """Per phase the maximum over its occurrences, of both counters, each reset as a phase begins (CUDA's
    counters stood in for: the CPU suite has none)."""
    readings = iter([(100, 300), (250, 260), (40, 900)])  # (allocated, reserved) peaks, MiB, per phase ended
    current = {}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: current.update(now=next(readings)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: current["now"][0] * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda: current["now"][1] * 2**20)
    memory = logs.PeakMemory(torch.device("cuda"))
    for name in ("train_step", "train_step", "eval"):
        with memory.phase(name):
            pass
    assert memory.peaks == {"train_step": 250, "eval": 40}
    assert memory.reserved == {"train_step": 300, "eval": 900}
    shared = logs.PeakMemory(torch.device("cuda"), alone=False)  # runs sharing a process: no per-run figure
    with shared.phase("train_step"):
        pass
    assert shared.peaks == {} and shared.reserved == {}
