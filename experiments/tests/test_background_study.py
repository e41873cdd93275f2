"""experiments/background_study.sh, run by bash as a GPU call runs it: the study goes on after the call that started
it has ended, and a later call reports it and brings its records back."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "background_study.sh"


def call(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def test_a_study_started_in_one_call_is_reported_and_packed_by_the_next(tmp_path, tiny_model_dir, shared_data):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "common": {"model.name": str(tiny_model_dir), "data.n_train": 32, "data.n_dev": 8, "data.n_test": 8,
                   "data.max_length": 48, "train.batch_size": 4, "train.steps": 2, "train.eval_every": 2,
                   "optim.lr": 1e-3, "train.progress": False},
        "tasks": [{"name": "sst2", "task": "sst2", "data": str(shared_data / "sst2")}],
        "seeds": [0, 1], "methods": [{"name": "mezo", "set": {"train.method": "mezo"}}]}))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "RUNS": str(tmp_path / "runs"), "OUT": str(out),
           "PYTHON": sys.executable, "POLL": "0"}
    started = call("start", "s1", study, "--parallel", "1", "--data-root", shared_data, env=env)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines()[0] == "study s1 still running"  # the call ends; the study goes on
        polled = call("poll", "s1", env={**env, "POLL": "300"})
    finally:  # a failed test leaves no study behind
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((tmp_path / "runs" / "s1.pid").read_text()), signal.SIGTERM)
    assert polled.returncode == 0, polled.stderr
    assert polled.stdout.splitlines()[:2] == ["study s1 ended", "2 runs finished"]
    with tarfile.open(out / "s1.tar.gz") as packed:
        names = packed.getnames()
    assert {"s1.log", "s1/sst2__mezo__s0/result.json", "s1/sst2__mezo__s1/result.json"} <= set(names)
    assert not [n for n in names if n.endswith(".safetensors") or "/final" in n]


@pytest.mark.parametrize("args", [["stop", "x"], [], ["poll"]])
def test_a_call_without_a_mode_and_a_name_is_refused_with_the_usage(args):
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "the first argument is start or poll, then the study's NAME (usage:" in done.stderr


def test_polling_a_study_never_started_says_so(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "poll", "nope"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "RUNS": str(tmp_path)})
    assert done.returncode == 2 and f"no study nope was started under {tmp_path}" in done.stderr
