"""`zofo meta-test` end to end on the CPU: a tiny model, two tiny BIG-bench task folders never in any split file."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zofo.meta.metatest as metatest
from tests.meta.test_split import write_task
from zofo.config import save_config
from zofo.errors import ZofoError
from zofo.meta import MetaTestInterrupted, MetaTestProtocol, meta_test, resolve
from zofo.meta.backbone import resolve_backbone
from zofo.meta.units import finished, unit_file
from zofo.models.load import load_model
from zofo.run.checkpoint import save_weights
from zofo.run.interrupt import TrainingInterrupted
from zofo.run.options import RunConfig

SRC = Path(__file__).resolve().parents[2] / "src"
SMALL = MetaTestProtocol(shots=4, seeds=(0, 1), n_dev=2, n_test=6, steps=2, eval_every=1, batch_size=2,
                         max_length=48, eval_batch_size=8, eval_max_tokens=64)  # a few examples a scoring forward
FLAGS = ["--shots", "4", "--seeds", "0", "1", "--n-dev", "2", "--n-test", "6", "--steps", "2", "--eval-every", "1",
         "--batch-size", "2", "--max-length", "48", "--no-progress"]


def test_meta_test_reports_every_setting_per_task_and_seed(tmp_path, tasks, tiny_model_dir):
    refs = resolve(str(tasks), tmp_path, "argument 1")  # a folder of tasks that no split file names
    out = tmp_path / "out"
    report = meta_test(refs, str(tiny_model_dir), SMALL, out, device="cpu", progress=False)
    assert [t["task"] for t in report["tasks"]] == ["tasks/films", "tasks/premises"]
    films, premises = report["tasks"]
    assert films["n_test"] == 6 and premises["n_test"] == 10 - 4 - 2  # what is left after shots and dev
    for row in report["tasks"]:
        for setting in ("zero_shot", "icl", "peft"):
            assert len(row[setting]["seeds"]) == 2 and 0.0 <= row[setting]["mean"] <= 1.0
    unit = json.loads((out / "units" / "tasks__films" / "seed1.json").read_text())
    assert unit["sizes"] == {"train": 4, "dev": 2, "test": 6}
    assert unit["peft_run"]["steps"] == 2 and unit["peft_run"]["best_step"] in (0, 1, 2)
    run = json.loads((Path(unit["peft_run"]["run_dir"]) / "result.json").read_text())
    assert run["config"]["peft"]["r"] == 16 and run["config"]["optim"]["lr_upper"] == 2e-4
    assert run["config"]["data"]["n_train"] == 4 and run["config"]["data"]["seed"] == 1
    assert "| mean (2 tasks) |" in (out / "meta_test.md").read_text()
    assert json.loads((out / "meta_test.json").read_text())["mean"] == report["mean"]


def test_an_interrupted_meta_test_continues_where_it_stopped(tmp_path, tasks, tiny_model_dir, monkeypatch):
    refs = resolve(str(tasks / "films"), tasks, "argument 1")
    calls = []
    evaluate = metatest.evaluate

    def interrupting(*args, **kwargs):  # Ctrl-C as seed 1's zero-shot scoring starts: the unit stops there
        calls.append(kwargs["max_tokens"])
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(metatest, "evaluate", interrupting)
    out = tmp_path / "out"
    with pytest.raises(MetaTestInterrupted, match=r"after 1 of 2 task-seed evaluations.*run the same command") as e:
        meta_test(refs, str(tiny_model_dir), SMALL, out, device="cpu", progress=False)
    assert e.value.exit_code == 130 and (out / "units" / "films" / "seed0.json").is_file()
    assert len(calls) == 3  # the stopped zero-shot scoring gave up between batches: no ICL scoring followed
    assert set(calls) == {SMALL.eval_max_tokens}  # zero-shot and ICL are scored within the protocol's bound
    assert not (out / "units" / "films" / "seed1.json").exists()
    first = (out / "units" / "films" / "seed0.json").read_text()
    assert json.loads(first)["bounds"] == {"eval_max_tokens": 64, "max_rows": None}  # each unit records its bounds
    report = meta_test(refs, str(tiny_model_dir), SMALL, out, device="cpu", progress=False)
    assert (out / "units" / "films" / "seed0.json").read_text() == first  # kept, not redone
    assert len(report["tasks"][0]["peft"]["seeds"]) == 2
    with pytest.raises(ZofoError, match=r"holds meta-test results of another protocol"):
        meta_test(refs, str(tiny_model_dir), MetaTestProtocol(**{**SMALL.__dict__, "steps": 3}), out,
                  device="cpu", progress=False)


def test_a_stopped_meta_test_has_every_task_of_a_seed_before_the_next_seed(tmp_path, tasks, tiny_model_dir,
                                                                           monkeypatch):
    refs = resolve(str(tasks), tasks, "argument 1")  # films and premises
    calls = []
    evaluate = metatest.evaluate

    def interrupting(*args, **kwargs):  # SIGINT in the third unit's zero-shot evaluation
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(metatest, "evaluate", interrupting)
    with pytest.raises(MetaTestInterrupted, match=r"after 2 of 4 task-seed evaluations"):
        meta_test(refs, str(tiny_model_dir), SMALL, tmp_path / "out", device="cpu", progress=False)
    done = sorted(str(f.relative_to(tmp_path / "out" / "units")) for f in (tmp_path / "out").glob("units/*/*.json"))
    assert done == ["films/seed0.json", "premises/seed0.json"]


def test_a_task_too_small_and_a_repeated_task_are_refused_before_anything_runs(tmp_path, tasks, tiny_model_dir):
    write_task(tmp_path / "small", 6)
    small = resolve(str(tmp_path / "small"), tmp_path, "argument 1")
    with pytest.raises(ZofoError, match=r"argument 1: task small has 6 examples, too few for 4 shots, 2 dev"):
        meta_test(small, str(tiny_model_dir), SMALL, tmp_path / "out", device="cpu", progress=False)
    twice = resolve(str(tasks / "films"), tasks, "argument 1") + resolve(str(tasks / "films"), tasks, "arg 2")
    with pytest.raises(ZofoError, match=r"arg 2: task films is named twice \(first at argument 1\)"):
        meta_test(twice, str(tiny_model_dir), SMALL, tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_run_folders_backbone_is_what_the_meta_test_loads(tmp_path, tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # a backbone unlike the base model
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    cfg = RunConfig()
    cfg.model.name, cfg.train.method = str(tiny_model_dir), "mezo"
    save_config(cfg, run / "config.yaml")
    save_weights(dict(model.named_parameters()), run / "final" / "backbone.safetensors")
    folder, described = resolve_backbone(str(run), tmp_path / "out")
    loaded, _ = load_model(folder)
    saved = load_file(str(run / "final" / "backbone.safetensors"))
    assert all(torch.equal(p, saved[n]) for n, p in loaded.named_parameters())
    assert described["method"] == "mezo" and described["base"] == str(tiny_model_dir)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the run trained further (or again under its path)
    save_weights(dict(model.named_parameters()), run / "final" / "backbone.safetensors")
    again, described_again = resolve_backbone(str(run), tmp_path / "out")
    assert again == folder and described_again["weights_sha256"] != described["weights_sha256"]
    loaded, _ = load_model(folder)  # written anew, not the first weights' folder kept
    assert torch.equal(next(loaded.parameters()), next(model.parameters()))
    (run / "final" / "backbone.safetensors").unlink()
    with pytest.raises(ZofoError, match=r"left its backbone unchanged.*\(meta-test its base model instead"):
        resolve_backbone(str(run), tmp_path / "out2")


def test_a_folder_with_results_refuses_the_same_run_trained_further_and_units_know_their_template(
        tmp_path, tasks, tiny_model_dir):
    run, out = tmp_path / "run", tmp_path / "out"
    (run / "final").mkdir(parents=True)
    cfg = RunConfig()
    cfg.model.name, cfg.train.method = str(tiny_model_dir), "mezo"
    save_config(cfg, run / "config.yaml")
    model, _ = load_model(str(tiny_model_dir))
    save_weights(dict(model.named_parameters()), run / "final" / "backbone.safetensors")
    films = resolve(str(tasks / "films"), tasks, "argument 1")
    one_seed = dataclasses.replace(SMALL, seeds=(0,))
    meta_test(films, str(run), one_seed, out, device="cpu", progress=False)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_weights(dict(model.named_parameters()), run / "final" / "backbone.safetensors")
    before = (out / "backbone" / "model.safetensors").read_bytes()
    with pytest.raises(ZofoError, match=r"holds meta-test results of another backbone"):
        meta_test(films, str(run), one_seed, out, device="cpu", progress=False)
    assert (out / "backbone" / "model.safetensors").read_bytes() == before  # the refused folder keeps its own
    unit = json.loads(unit_file(out, films[0], 0).read_text())
    assert unit["template"] is None and finished(unit_file(out, films[0], 0), films[0])
    other = dataclasses.replace(films[0], template="other")  # the same data under another prompt: not this unit
    assert not finished(unit_file(out, films[0], 0), other)


def zofo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "zofo.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_command_prints_the_table_and_exits_0_or_2(tmp_path, tasks, tiny_model_dir):
    done = zofo("meta-test", str(tasks / "films"), str(tasks / "premises"), "--model", str(tiny_model_dir),
                "--out", str(tmp_path / "out"), "--device", "cpu", *FLAGS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["task", "metric", "n_test", "zero-shot", "ICL", "k=4", "LoRA", "k=4"]
    assert [line.split()[0] for line in lines[1:4]] == ["films", "premises", "mean"]
    assert "wrote" in lines[-1] and (tmp_path / "out" / "meta_test.md").is_file()
    bad = zofo("meta-test", str(tmp_path / "nowhere"), "--model", str(tiny_model_dir), *FLAGS, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("zofo: error: argument 1 (") and "neither a task name" in bad.stderr


@pytest.mark.parametrize("flags, message", [
    (["--dtype", "float61"], "zofo: error: unknown dtype 'float61' (use one of: float32"),
    (["--device", "gpu"], "zofo: error: unknown device 'gpu' (use auto, cpu, cuda or cuda:N)"),
])
def test_the_command_refuses_a_bad_dtype_or_device_with_exit_2_and_writes_nothing(tmp_path, tasks, tiny_model_dir,
                                                                                  flags, message):
    """They exited 1 (a raw traceback for the device), the dtype after writing it into protocol.json."""
    bad = zofo("meta-test", str(tasks / "films"), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"),
               *FLAGS, *flags, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(message), bad.stderr
    assert not (tmp_path / "out").exists()


def test_the_command_refuses_eval_max_tokens_0_with_exit_2(tmp_path, tasks, tiny_model_dir):
    bad = zofo("meta-test", str(tasks / "films"), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"),
               *FLAGS, "--eval-max-tokens", "0", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    message = "zofo: error: meta-test --eval-max-tokens must be >= 1, got 0 (give --eval-max-tokens 1 or more)"
    assert bad.stderr.strip().splitlines()[-1] == message
    assert not (tmp_path / "out").exists()


def test_max_rows_reaches_the_k_shot_runs_and_the_bounds_leave_the_folder_identity_alone():
    bounded, plain = MetaTestProtocol(max_rows=4), MetaTestProtocol()
    assert "train.max_rows=4" in bounded.run_overrides()
    assert not any(o.startswith("train.max_rows") for o in plain.run_overrides())
    # bounds change no result: they stay out of the folder's identity (older folders and other bounds continue)
    assert bounded.to_dict() == plain.to_dict() and "eval_max_tokens" not in plain.to_dict()
    assert bounded.bounds() == {"eval_max_tokens": plain.eval_max_tokens, "max_rows": 4}
    with pytest.raises(ZofoError, match="meta-test --lr must be a finite number, got nan"):
        MetaTestProtocol(lr=float("nan")).check()
    with pytest.raises(ZofoError, match="meta-test --max-rows must be >= 1, got 0"):
        MetaTestProtocol(max_rows=0).check()


def test_a_stop_from_another_ranks_training_loop_names_its_signal(tmp_path, tasks, tiny_model_dir, monkeypatch):
    """Under torchrun a rank's k-shot run may stop because another rank did (TrainingInterrupted with SIGTERM) while
    its own stop request holds no signal: the interruption still names one, instead of failing to."""
    refs = resolve(str(tasks / "films"), tasks, "argument 1")

    def stopped_elsewhere(self, ref, seed, n_test, stop):
        raise TrainingInterrupted(0, tmp_path, signal.SIGTERM)

    monkeypatch.setattr(metatest._Runner, "kshot_peft", stopped_elsewhere)
    with pytest.raises(MetaTestInterrupted, match=r"interrupted by SIGTERM after 0 of 2") as e:
        meta_test(refs, str(tiny_model_dir), SMALL, tmp_path / "out", device="cpu", progress=False)
    assert e.value.exit_code == 143


@pytest.mark.parametrize("left", ["precious.txt", "config.yaml"])  # the user's file; a training run's folder
def test_the_command_refuses_a_folder_holding_what_a_meta_test_does_not_write(tmp_path, tasks, tiny_model_dir, left):
    """meta-test wrote its units, runs and tables into any folder, a training run's included."""
    out = tmp_path / "out"
    out.mkdir()
    (out / left).write_text("kept")
    bad = zofo("meta-test", str(tasks / "films"), "--model", str(tiny_model_dir), "--out", str(out), *FLAGS,
               cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        f"zofo: error: --out {out} holds files a meta-test does not write ({left}) (give an absent or empty folder, "
        "or an earlier meta-test's to continue it)")
    assert sorted(p.name for p in out.iterdir()) == [left]
