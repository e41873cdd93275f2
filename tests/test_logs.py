"""RunLogger's clocks: wall-clock `time`, and `train_time` without what ran off the clock."""

from __future__ import annotations

import json

from zofo import logs


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
    logger.resume_from(elapsed=10.0, off_clock=4.0)
    clock.now = 52.0
    logger.log(3, "train")
    assert (records(tmp_path)[-1]["time"], records(tmp_path)[-1]["train_time"]) == (12.0, 8.0)
