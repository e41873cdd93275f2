"""`zofo meta-train` end to end in processes on the CPU: meta-train over three tiny task folders, then
`zofo meta-test --model RUN`, `zofo eval` and `zofo train` on RUN/backbone, and `zofo replay RUN`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.meta.test_metatest import FLAGS, zofo
from tests.meta.test_metatrain import write_split

TRAIN = ["--tasks-per-step", "2", "--lower-steps", "2", "--upper", "6", "--lower", "12", "--n-dev", "3",
         "--lr", "1e-3", "--lam", "10", "--batch-size", "2", "--max-length", "32", "--steps", "2", "--log-every",
         "1", "--device", "cpu", "--no-progress"]


def test_meta_train_then_meta_test_eval_train_and_replay_exit_0(tmp_path, tiny_model_dir):
    split, run = write_split(tmp_path), tmp_path / "run"
    done = zofo("meta-train", "--split", str(split), "--model", str(tiny_model_dir), "--out", str(run), *TRAIN,
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run folder:" in done.stdout and (run / "final" / "backbone.safetensors").is_file()
    assert len(json.loads((run / "final" / "trajectory.json").read_text())["updates"]) == 2
    tested = zofo("meta-test", "--split", str(split), "--model", str(run), "--out", str(tmp_path / "mt"), "--device",
                  "cpu", *FLAGS, cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr
    assert json.loads((tmp_path / "mt" / "meta_test.json").read_text())["backbone"]["run"] == str(run)
    task = str(tmp_path / "bb" / "t3")
    evaluated = zofo("eval", "--model", str(run / "backbone"), "--task", "bigbench", "--data", task, "--n-test", "8",
                     "--n-train", "4", "--n-dev", "2", "--device", "cpu", "--no-progress", "--output",
                     str(tmp_path / "eval.json"), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    trained = zofo("train", "--method", "fo-peft", "--model", str(run / "backbone"), "--task", "bigbench", "--data",
                   task, "--steps", "1", "--n-train", "4", "--n-dev", "2", "--n-test", "4", "--batch-size", "2",
                   "--device", "cpu", "--output-dir", str(tmp_path / "train"), "--set", "train.progress=false",
                   cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    replayed = zofo("replay", str(run), cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    again = zofo("meta-train", "--resume", str(run), "--steps", "3", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(json.loads((run / "final" / "trajectory.json").read_text())["updates"]) == 3
    result = (run / "result.json").read_text()
    for steps, said in (("2", "--steps 2 is below the checkpoint's step 3"), ("3", "finished at step 3")):
        back = zofo("meta-train", "--resume", str(run), "--steps", steps, "--no-progress", cwd=tmp_path)
        assert back.returncode == 2 and said in back.stderr, back.stderr  # it said "3 steps", exit 0
    assert (run / "result.json").read_text() == result
    refused = zofo("meta-train", "--split", str(split), "--model", str(tiny_model_dir), "--out", str(run), *TRAIN,
                   cwd=tmp_path)
    assert refused.returncode == 2 and "already holds a meta-training run" in refused.stderr


@pytest.mark.parametrize("flags, message", [
    (["--method", "fo-peft", "--max-rows", "0"], "--max-rows must be >= 1, got 0 (leave it unset for whole batches)"),
    (["--max-seconds", "0"], "--max-seconds must be > 0, got 0.0 (leave it unset for no budget)"),
    # each of these once failed after meta.json was written, leaving a folder neither a start nor --resume took
    (["--tasks-per-step", "4"], "--tasks-per-step 4 with 3 meta-train tasks in"),
    (["--dtype", "float61"], "unknown dtype 'float61' (use one of: float32"),
    (["--device", "gpu"], "unknown device 'gpu' (use auto, cpu, cuda or cuda:N)"),
    (["--method", "fo-peft", "--peft", "prefix"], "--peft prefix cannot be merged (use --peft lora)"),
    # these trained on NaN losses, every step skipped
    (["--lr", "inf"], "--lr must be a finite number, got inf (give a finite value)"),
    (["--lam", "nan"], "--lam must be a finite number, got nan"),
    (["--lr-upper=-1e-4"], "--lr-upper must be >= 0, got -0.0001"),
])
def test_bad_budgets_and_row_bounds_are_usage_errors(tmp_path, tiny_model_dir, flags, message):
    split = write_split(tmp_path)
    refused = zofo("meta-train", "--split", str(split), "--model", str(tiny_model_dir), "--out", str(tmp_path / "r"),
                   *TRAIN, *flags, cwd=tmp_path)
    assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not (tmp_path / "r").exists()


def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_resume_from_any_folder(tmp_path, tiny_model_dir):
    """A run killed before its first checkpoint (save-every 0: the end) left meta.json alone: a fresh start says to
    resume, and --resume, given from another current folder, runs it from step 0 to what a straight run gives."""
    split, run, straight = write_split(tmp_path), tmp_path / "run", tmp_path / "straight"
    flags = ["--split", str(split), "--model", str(tiny_model_dir), *TRAIN]
    assert zofo("meta-train", *flags, "--out", str(straight), cwd=tmp_path).returncode == 0
    assert zofo("meta-train", *flags, "--out", "run", cwd=tmp_path).returncode == 0
    for name in ("checkpoint", "final", "backbone", "result.json"):  # as a kill before the first checkpoint leaves it
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    refused = zofo("meta-train", *flags, "--out", str(run), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "stopped before its first checkpoint (start it again from step 0 with --resume" in refused.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert zofo("meta-train", "--resume", str(run), "--split", str(split), cwd=elsewhere).returncode == 2
    again = zofo("meta-train", "--resume", str(run), "--no-progress", cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert not list(elsewhere.iterdir())  # nothing written where the command ran
    a, b = (load_file(str(r / "final" / "backbone.safetensors")) for r in (straight, run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the first attempt's log was cleared, not continued
    busy = tmp_path / "busy"
    (busy / "notes").mkdir(parents=True)
    refused = zofo("meta-train", *flags, "--out", str(busy), cwd=tmp_path)
    assert refused.returncode == 2 and "is not empty and holds no meta-training run" in refused.stderr
