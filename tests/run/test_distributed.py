"""Data-parallel and sharded runs on 2 CPU processes (gloo) against one process with the same global batch.

One spawn of 2 ranks (`ranks_ran`, shared by the module) trains every scenario in turn, so the processes start once:
every training method data-parallel (global batch 4 = 2 x 2), a sharded (FSDP2) mezo, a mezo run stopped by SIGTERM
on rank 0 alone and resumed, and the launches that must be refused. The tests compare what they left on disk with
runs made here, in one process.

Tolerances: a rank's loss is the mean over its 2 examples, the 2-rank loss the float64 mean of the two, against the
float32 mean over 4 in one process: the same sum rounded differently (so not bit for bit). ZO's c_i then agree to
float32 rounding of the losses over 2 eps, and the weights after 4 steps to 1e-6 (MeZO, ZO-PEFT at lr 1e-3;
measured 3.9e-7 and 2.6e-7) or 1e-5 (Bilevel ZOFO, whose penalty lam (g_p - g_z) and Adam steps on p and z amplify
the rounding, measured 1.3e-6; FO-PEFT 8.5e-7), while training moved them by 0.009 to 0.05. FO gradients are
averaged over the ranks' halves: equal to rounding, which Adam on a whole backbone amplifies (see the table).
The sharded run draws the same u from the same (seed, name, element) and updates each rank's rows with their global
offset: bit for bit the unsharded 2-rank run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.ranks import WORLD, free_port, spawn_ranks
from tests.run.test_recipe import final_weights, tiny_run
from zofo import api
from zofo.errors import ZofoError
from zofo.methods import METHODS
from zofo.run.interrupt import TrainingInterrupted
from zofo.run.logs import RunLogger, read_log
from zofo.run.replay import replay_run

STEPS = ["train.steps=4", "train.log_every=1", "train.eval_every=2"]
DATA_PARALLEL = ("mezo", "bilevel-zofo", "fo-peft", "zo-peft", "bilevel-fo", "fo-full")
SHARDED = tuple(name for name in METHODS if METHODS.get(name).shards_backbone)
#: launches refused at start: each rank's overrides, and the words the message must hold
WRONG = {
    "seed": (lambda rank: ["train.method=mezo", f"train.seed={rank}"],
             ["rank 1 resolved train.seed=1 where rank 0 has 0", "same flags"]),
    "batch": (lambda rank: ["train.method=mezo", "train.batch_size=3"],
              ["train.batch_size 3 does not divide among 2 ranks", "--batch-size 4"]),
    "fsdp": (lambda rank: ["train.method=fo-full", "train.fsdp=true"],
             ["train.fsdp does not apply to method fo-full", "--method bilevel-zofo, fo-peft, mezo, zo-peft"]),
}


def rank_main(rank: int, root: Path, model_dir: Path, data: Path) -> None:
    """One rank: every scenario in turn (errors of the wrong launches written to root/errors-<rank>.json)."""
    for method in DATA_PARALLEL:
        api.train(tiny_run(model_dir, data, root / f"dp-{method}", f"train.method={method}", *STEPS))
    for method in SHARDED:
        api.train(tiny_run(model_dir, data, root / f"fsdp-{method}", f"train.method={method}", "train.fsdp=true",
                           *STEPS))
    interrupted_then_resumed(rank, root / "stopped", model_dir, data)
    errors = {}
    for name, (overrides, _) in WRONG.items():
        try:
            api.train(tiny_run(model_dir, data, root / f"wrong-{name}", *overrides(rank), *STEPS))
        except ZofoError as err:
            errors[name] = str(err)
    (root / f"errors-{rank}.json").write_text(json.dumps(errors))


def interrupted_then_resumed(rank: int, out: Path, model_dir: Path, data: Path) -> None:
    """A mezo run whose rank 0 alone gets SIGTERM as it logs step 2 (both ranks must stop after that step), then
    resumed from its checkpoint by both ranks."""
    log = RunLogger.log

    def log_then_signal(self, at, phase, **values):
        log(self, at, phase, **values)
        if phase == "train" and at == 2 and rank == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    RunLogger.log = log_then_signal
    try:
        api.train(tiny_run(model_dir, data, out, "train.method=mezo", *STEPS))
        raise AssertionError("the run was not stopped")
    except TrainingInterrupted as stop:
        assert stop.step == 2
    finally:
        RunLogger.log = log
    api.train(tiny_run(model_dir, data, out, "train.method=mezo", *STEPS, f"train.resume={out / 'checkpoint'}"))


@pytest.fixture(scope="module")
def ranks_ran(tmp_path_factory, shared_data):
    """The 2-rank runs' root folder and the tiny model they trained (one spawn for the module)."""
    model_dir = tmp_path_factory.mktemp("ranks-model") / "tiny-llama"
    from tests.tiny import build_tiny_tokenizer, tiny_model

    tokenizer = build_tiny_tokenizer()
    tiny_model("llama", vocab_size=len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    root = spawn_ranks(rank_main, lambda attempt: tmp_path_factory.mktemp(f"ranks-{attempt}"), model_dir, shared_data)
    return root, model_dir


def one_process(tmp_path, ranks_ran, shared_data, name: str, *overrides) -> dict[str, torch.Tensor]:
    _, model_dir = ranks_ran
    api.train(tiny_run(model_dir, shared_data, tmp_path / name, *overrides, *STEPS))
    return final_weights(tmp_path / name)


def differences(a: dict, b: dict) -> torch.Tensor:
    assert a and a.keys() == b.keys()
    return torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])


def moved(weights: dict[str, torch.Tensor], model_dir: Path) -> float:
    """How far training took the weights from where they started: the base model's backbone, LoRA's B at zero."""
    base = load_file(str(model_dir / "model.safetensors"))
    start = {k: base.get(k.split(":", 1)[1], torch.zeros_like(v)) for k, v in weights.items()}
    return differences({k: v for k, v in weights.items() if "lora_A" not in k},
                       {k: v for k, v in start.items() if "lora_A" not in k}).max().item()


@pytest.mark.parametrize("method, tolerance, quantile", [
    ("mezo", 1e-6, 1.0), ("zo-peft", 1e-6, 1.0), ("bilevel-zofo", 1e-5, 1.0), ("fo-peft", 1e-5, 1.0),
    # Adam on the backbone: a first step moves each weight by about lr whatever its gradient's size, so a gradient
    # element near zero that rounds the other way moves it by up to 2 lr (measured: 4% of weights past 1e-5,
    # the largest 8e-4, the median 1e-7); the bulk is compared
    ("bilevel-fo", 1e-5, 0.9), ("fo-full", 1e-5, 0.9)])
def test_a_data_parallel_run_equals_one_process_with_the_global_batch(tmp_path, ranks_ran, shared_data, method,
                                                                       tolerance, quantile):
    root, model_dir = ranks_ran
    alone = one_process(tmp_path, ranks_ran, shared_data, method, f"train.method={method}")
    apart = differences(alone, final_weights(root / f"dp-{method}")).quantile(quantile).item()
    assert apart < tolerance < moved(alone, model_dir) / 100  # training moved the weights far more
    logged = [r for r in read_log(root / f"dp-{method}") if r["phase"] == "train"]
    expected = [r for r in read_log(tmp_path / method) if r["phase"] == "train"]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]  # rank 0 alone wrote the log
    assert [r["loss"] for r in logged] == pytest.approx([r["loss"] for r in expected], rel=1e-5)


def test_a_data_parallel_zo_step_sends_the_probe_losses_only(ranks_ran):
    root, _ = ranks_ran
    result = json.loads((root / "dp-mezo" / "result.json").read_text())
    # two-sided, q = 1: L+ and L- in float64 per step, one all-reduce; nothing of the backbone
    assert result["ranks"] == {"world": 2, "sent_bytes": 4 * 16, "collectives": 4, "control_bytes": 4 * 8}
    assert result["work"]["forward_rows"] > 0


def test_fo_steps_send_the_adapters_gradients_once_a_step(ranks_ran):
    """FO-PEFT: one flat float32 all-reduce of the LoRA gradients a step; Bilevel ZOFO: the probe losses, then z's
    gradients in each of the K = 2 lower steps and p's in the upper step (LoRA counted from the saved adapters)."""
    root, _ = ranks_ran
    lora = sum(v.numel() for k, v in final_weights(root / "dp-fo-peft").items() if "adapter" in k)
    sent = {m: json.loads((root / f"dp-{m}" / "result.json").read_text())["ranks"] for m in ("fo-peft", "bilevel-zofo")}
    assert sent["fo-peft"] == {"world": 2, "sent_bytes": 4 * lora * 4, "collectives": 4, "control_bytes": 32}
    assert sent["bilevel-zofo"] == {"world": 2, "sent_bytes": 4 * (16 + 3 * lora * 4), "collectives": 4 * 4,
                                    "control_bytes": 32}


@pytest.mark.parametrize("method", SHARDED)
def test_a_sharded_run_equals_the_unsharded_one_bit_for_bit(ranks_ran, method):
    """FSDP2 over 2 ranks: the backbone (ZO-trained, or frozen) and the PEFT modules bit for bit the 2-rank
    data-parallel run's, the same dev curve and test result."""
    root, _ = ranks_ran
    sharded, unsharded = final_weights(root / f"fsdp-{method}"), final_weights(root / f"dp-{method}")
    assert sharded.keys() == unsharded.keys() and all(torch.equal(sharded[k], unsharded[k]) for k in sharded)
    dev = [[(r["step"], r["accuracy"]) for r in read_log(root / run) if r["phase"] == "dev"]
           for run in (f"fsdp-{method}", f"dp-{method}")]
    assert dev[0] == dev[1] and len(dev[0]) == 3
    results = [json.loads((root / run / "result.json").read_text()) for run in (f"fsdp-{method}", f"dp-{method}")]
    assert results[0]["test"] == results[1]["test"]  # the best-on-dev model (a ZO backbone rebuilt from its trajectory)


def test_the_seed_trajectory_of_a_sharded_run_replays_in_one_process_to_its_weights(ranks_ran, tmp_path):
    """The trajectory holds the c_i the ranks agreed on: one process rebuilds the sharded run's backbone exactly."""
    root, _ = ranks_ran
    report = replay_run(root / "fsdp-mezo", tmp_path / "replayed.safetensors")
    assert report.tensors > 0 and report.identical == report.tensors


def test_a_2_rank_run_stopped_by_sigterm_on_one_rank_resumes_to_the_straight_runs_weights(ranks_ran):
    root, _ = ranks_ran
    checkpoint = json.loads((root / "stopped" / "checkpoint" / "loop.json").read_text())
    assert checkpoint["step"] == 4  # the resumed run's last checkpoint
    a, b = final_weights(root / "stopped"), final_weights(root / "dp-mezo")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_log(root / "stopped") if r["phase"] == "train"]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("name", list(WRONG))
def test_a_wrong_launch_is_refused_on_every_rank_with_what_and_how(ranks_ran, name):
    root, _ = ranks_ran
    for rank in range(WORLD):
        message = json.loads((root / f"errors-{rank}.json").read_text())[name]
        assert all(words in message for words in WRONG[name][1]), message
    assert not (root / f"wrong-{name}" / "result.json").exists()


def test_torchrun_zofo_train_as_a_process(ranks_ran, shared_data, tmp_path):
    """`torchrun --nproc-per-node 2 -m zofo.cli.main train ...`: exit 0, one report, the run folder written once;
    the same with a batch of 3 exits non-zero with the one-line error."""
    _, model_dir = ranks_ran
    flags = ["--method", "mezo", "--model", str(model_dir), "--task", "sst2", "--data", str(shared_data / "sst2"),
             "--n-train", "16", "--n-dev", "8", "--n-test", "8", "--steps", "2", "--set", "train.progress=false"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "zofo.cli.main", "train", *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([*command, "--batch-size", "4", "--output-dir", str(tmp_path / "run")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("test accuracy") == 1 and (tmp_path / "run" / "result.json").exists()
    refused = subprocess.run([*command, "--batch-size", "3", "--output-dir", str(tmp_path / "refused")], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "zofo: error: train.batch_size 3 does not divide among 2 ranks" in refused.stderr


def test_a_command_other_than_train_is_refused_under_torchrun(monkeypatch, capsys):
    from zofo.cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["config"]) == 2
    assert "zofo: error: zofo config runs in one process, not under torchrun" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["config"]) == 0


def test_fsdp_with_a_method_it_does_not_serve_is_refused_in_one_process_too(tmp_path, tiny_model_dir, shared_data):
    with pytest.raises(ZofoError, match="train.fsdp does not apply to method bilevel-fo"):
        api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=bilevel-fo", "train.fsdp=true"))
    with pytest.raises(ZofoError, match="train.fsdp takes whole batches"):
        api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=mezo", "train.fsdp=true",
                           "train.max_rows=4"))
    with pytest.raises(ZofoError, match="train.fsdp needs zo.rule sgd"):
        api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=mezo", "train.fsdp=true",
                           "zo.rule=adam"))
    assert not (tmp_path / "run").exists()
