"""experiments/work_cost.py: the speed-up on work under a backward cost, against its closed form, and the script as
a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.report import runs as run_rows
from experiments.tests.test_study import fake_run
from experiments.work_cost import means

ROOT = Path(__file__).resolve().parents[2]


def two_runs(runs: Path) -> None:
    """MeZO: 3000 forward rows over 3 steps, its final dev 0.70 first reached at step 2 (work 2.0 thousand).
    Bilevel: 300 forward and 300 backward rows over 3 steps, 0.70 at step 1: work 0.1 (1 + c) at backward cost c."""
    fake_run(runs, "sst2", "mezo", 0, [(0, 0.5), (50, 0.6), (100, 0.7)], test=0.7)
    fake_run(runs, "sst2", "bilevel", 0, [(0, 0.5), (100, 0.7), (200, 0.8)], test=0.8)
    result_file = runs / "sst2__bilevel__s0" / "result.json"
    result = json.loads(result_file.read_text())
    result_file.write_text(json.dumps({**result, "work": {"forward_rows": 300, "backward_rows": 300}}))


@pytest.mark.parametrize("cost", [1.0, 1.5, 3.0])
def test_the_speedup_on_work_falls_as_the_closed_form_says(tmp_path, cost):
    two_runs(tmp_path / "runs")
    rows = run_rows.load_runs(tmp_path / "runs")
    assert means(rows, "bilevel", "mezo", cost) == {"sst2": (pytest.approx(20 / (1 + cost)), 1)}


def test_the_script_reads_a_folder_of_an_aggregates_file(tmp_path):
    two_runs(tmp_path / "runs")
    aggregates = tmp_path / "aggregates.yaml"
    aggregates.write_text(yaml.safe_dump({"res/x": {"sources": ["runs"], "options": {}}}))
    command = [sys.executable, str(ROOT / "experiments" / "work_cost.py"), "res/x", "--method", "bilevel",
               "--backward-cost", "1", "3", "--root", str(tmp_path), "--aggregates", str(aggregates),
               "--out", str(tmp_path / "cost.md")]
    done = subprocess.run(command, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    assert "| sst2 | 10.00x (n 1) | 5.00x (n 1) |" in done.stdout
    assert "| tasks at 4x or more | 1 of 1 | 1 of 1 |" in done.stdout
    assert (tmp_path / "cost.md").read_text() == done.stdout
    missing = subprocess.run(command[:2] + ["res/y"] + command[3:], capture_output=True, text=True,
                             env={"PYTHONPATH": str(ROOT / "src")})
    assert missing.returncode == 1 and "res/y: not a results folder of" in missing.stderr
