"""experiments/matched.py: FO budgets matched to Bilevel ZOFO's runs in steps, rows and seconds, from the records."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import yaml

from experiments import matched

ROOT = Path(__file__).resolve().parents[2]


def run(name: str, steps: int, rows: int, seconds: float, lower_steps: int | None = None,
        ran: tuple[float, float] | None = None) -> dict:
    """A record; ``ran``: its start and end (placement.json), which tell which runs shared the GPU."""
    config = {"bilevel": {"lower_steps": lower_steps}} if lower_steps else {}
    placement = {"device": None, "started": ran[0], "ended": ran[1]} if ran else None
    return {"name": name, "placement": placement,
            "result": {"steps": steps, "work": {"forward_rows": rows, "backward_rows": 0},
                       "train_seconds_without_evaluation": seconds, "config": config}}


RECORDS = [
    run("rte__bilevel-zofo-lora@lr_upper0.0003__s0", 100, 57600, 300.0, lower_steps=10, ran=(0, 310)),  # alone
    run("rte__bilevel-zofo-lora@lr_upper0.0003__s1", 80, 46080, 400.0, lower_steps=10,  # stopped by its cap, and
        ran=(1000, 1410)),                                                              # shared with cb's run
    run("rte__bilevel-zofo-lora@lr_upper0.001__s0", 100, 1, 1.0, lower_steps=10),     # another point: left out
    run("rte__fo-lora@lr_upper0.0001__s0", 500, 16000, 150.0),                         # 32 rows a step
    run("cb__bilevel-zofo-lora@lr_upper0.0003__s0", 100, 96000, 350.0, lower_steps=10, ran=(1000, 1360)),
    run("wic__bilevel-zofo-lora@lr_upper0.0003__s0", 100, 64000, 200.0, lower_steps=10),  # no FO run of wic
]


def test_budgets_are_means_over_the_chosen_points_runs_and_seconds_over_those_alone_on_the_gpu():
    budgets = matched.matched(RECORDS, "rte", "bilevel-zofo-lora@lr_upper0.0003", "fo-lora")
    assert budgets == {"steps": 900, "rows": (57600 + 46080) / 2 / 32, "seconds": 300.0, "bilevel_runs": 2,
                       "alone_runs": 1}
    assert matched.matched(RECORDS, "wic", "bilevel-zofo-lora@lr_upper0.0003", "fo-lora") is None
    with_cb = [*RECORDS, run("cb__fo-lora@lr_upper0.0001__s0", 1000, 32000, 100.0)]
    assert matched.matched(with_cb, "cb", "bilevel-zofo-lora@lr_upper0.0003", "fo-lora") == {
        "steps": 1000, "rows": 3000, "seconds": None, "bilevel_runs": 1, "alone_runs": 0}  # shared with rte's s1


def test_the_command_prints_the_table_and_writes_the_overrides(tmp_path):
    records = tmp_path / "runs.jsonl.gz"
    with gzip.open(records, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    out = tmp_path / "budgets.yaml"
    done = subprocess.run([sys.executable, "-m", "experiments.matched", str(records), "--bilevel",
                           "bilevel-zofo-lora@lr_upper0.0003", "--fo", "fo-lora", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| rte | 2 (1) | 900 | 1620 | 300.0 |" in done.stdout and "| cb |" not in done.stdout
    assert "no budget (c)" not in done.stdout
    assert yaml.safe_load(out.read_text()) == {"rte": {
        "steps": {"train.steps": 900}, "rows": {"train.steps": 1620},
        "seconds": {"train.max_train_seconds": 300.0, "train.steps": 1_000_000}}}
    with gzip.open(records, "wt") as f:  # cb gets an FO run: its only Bilevel run shared the GPU
        f.writelines(json.dumps(r) + "\n" for r in [*RECORDS, run("cb__fo-lora@lr_upper0.0001__s0", 1000, 32000, 1.0)])
    shared = subprocess.run([sys.executable, "-m", "experiments.matched", str(records), "--bilevel",
                             "bilevel-zofo-lora@lr_upper0.0003", "--fo", "fo-lora", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True)
    assert shared.returncode == 0, shared.stderr
    assert "| cb | 1 (0) | 1000 | 3000 | - |" in shared.stdout
    assert ("no budget (c) for cb: none of Bilevel ZOFO's runs there had the GPU to itself (at most 1.05 runs on it, "
            "time-weighted, by the start and end times in these records); run bilevel-zofo-lora@lr_upper0.0003 alone "
            "(study.py --parallel 1) and give its records too") in shared.stdout
    assert set(yaml.safe_load(out.read_text())["cb"]) == {"steps", "rows"}
    none = subprocess.run([sys.executable, "-m", "experiments.matched", str(records), "--bilevel", "x@y", "--fo",
                           "fo-lora"], cwd=ROOT, capture_output=True, text=True)
    assert none.returncode == 1 and "no task has runs of both x@y and fo-lora" in none.stderr
