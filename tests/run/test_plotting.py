"""`zofo plot`: curves against steps and seconds, on the clock every run shares."""

from __future__ import annotations

import json

from zofo.run.logs import shared_clock
from zofo.run.plotting import plot_runs


def write_log(run_dir, with_train_time: bool) -> None:
    run_dir.mkdir(parents=True)
    records = [{"step": s, "phase": "train", "time": s * 2.0, "loss": 1.0 / s} for s in (1, 2)]
    records.append({"step": 2, "phase": "dev", "time": 5.0, "accuracy": 0.6})
    for r in records:
        if with_train_time:
            r["train_time"] = r["time"] / 2
    (run_dir / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records))


def test_runs_are_drawn_on_training_seconds_only_when_every_run_logged_them(tmp_path):
    new, old = tmp_path / "a" / "run", tmp_path / "b" / "run"   # same folder name in two places
    write_log(new, with_train_time=True)
    write_log(old, with_train_time=False)
    read = lambda d: [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert shared_clock(read(new)) == "train_time"
    assert shared_clock(read(new) + read(old)) == "time"
    target = plot_runs([str(new), str(old)], str(tmp_path / "both.png"))
    assert target.stat().st_size > 10_000
