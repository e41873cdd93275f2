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


def run(name: str, steps: int, rows: int, seconds: float, lower_steps: int | None = None) -> dict:
    config = {"bilevel": {"lower_steps": lower_steps}} if lower_steps else {}
    return {"name": name, "result": {"steps": steps, "work": {"forward_rows": rows, "backward_rows": 0},
                                     "train_seconds_without_evaluation": seconds, "config": config}}


RECORDS = [
    run("rte__bilevel-zofo-lora@lr_upper0.0003__s0", 100, 57600, 300.0, lower_steps=10),
    run("rte__bilevel-zofo-lora@lr_upper0.0003__s1", 80, 46080, 400.0, lower_steps=10),  # stopped by its cap
    run("rte__bilevel-zofo-lora@lr_upper0.001__s0", 100, 1, 1.0, lower_steps=10),     # another point: left out
    run("rte__fo-lora@lr_upper0.0001__s0", 500, 16000, 150.0),                         # 32 rows a step
    run("cb__bilevel-zofo-lora@lr_upper0.0003__s0", 100, 96000, 350.0, lower_steps=10),  # no FO run of cb
]


def test_budgets_are_means_over_the_chosen_points_runs():
    budgets = matched.matched(RECORDS, "rte", "bilevel-zofo-lora@lr_upper0.0003", "fo-lora")
    assert budgets == {"steps": 900, "rows": (57600 + 46080) / 2 / 32, "seconds": 350.0, "bilevel_runs": 2}
    assert matched.matched(RECORDS, "cb", "bilevel-zofo-lora@lr_upper0.0003", "fo-lora") is None


def test_the_command_prints_the_table_and_writes_the_overrides(tmp_path):
    records = tmp_path / "runs.jsonl.gz"
    with gzip.open(records, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    out = tmp_path / "budgets.yaml"
    done = subprocess.run([sys.executable, "-m", "experiments.matched", str(records), "--bilevel",
                           "bilevel-zofo-lora@lr_upper0.0003", "--fo", "fo-lora", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| rte | 2 | 900 | 1620 | 350.0 |" in done.stdout and "| cb |" not in done.stdout
    assert yaml.safe_load(out.read_text()) == {"rte": {
        "steps": {"train.steps": 900}, "rows": {"train.steps": 1620},
        "seconds": {"train.max_train_seconds": 350.0, "train.steps": 1_000_000}}}
    none = subprocess.run([sys.executable, "-m", "experiments.matched", str(records), "--bilevel", "x@y", "--fo",
                           "fo-lora"], cwd=ROOT, capture_output=True, text=True)
    assert none.returncode == 1 and "no task has runs of both x@y and fo-lora" in none.stderr
