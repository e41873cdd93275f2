"""Meta-training on 2 CPU processes (gloo) against one process with the same global batch.

One spawn of 2 ranks (`ranks_ran`, shared by the module) runs every scenario in turn: bilevel-zofo, bilevel-fo and
the pooled fo-peft baseline data-parallel (global batch 4 = 2 x 2 per task), a bilevel-zofo run stopped at step 2
and resumed by both ranks, and the launches that must be refused. The tests compare what the runs left on disk with
runs made here, in one process.

Tolerances: a rank's F_i and FO losses are means over its 2 examples, the ranks' mean of them (float64 for the
probe losses, float32 for gradients) against the float32 mean over 4 in one process: the same sums rounded
differently, not bit for bit. After 4 steps (measured): bilevel-zofo's backbone agrees to 5.9e-7 (bound 2e-6; training
moved it by 4.4e-3) and its blocks with their Adam states to 3.6e-5 (bound 1e-4; Adam at lr 1e-2 turns a gradient
element near zero that rounds the other way into a step of up to 2 lr; the blocks moved by 3e-2); fo-peft (the
single-task `Run` on the pooled data) to 7e-8 (bound 1e-6). bilevel-fo's Adam on the whole backbone flips such
elements too, and the flipped weights feed the later steps: its median agrees to 3.7e-6 (bound 1e-5; the 90th
percentile 3.7e-5, the largest 1.9e-3), where a rank that skipped the averaging (one process on half the batch)
is 2.7e-3 away at the median. The dev accuracies, every dev example scored and gathered, are equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.meta.test_metatrain import write_split
from tests.ranks import WORLD, free_port, spawn_ranks
from tests.run.test_distributed import differences
from zofo.errors import ZofoError
from zofo.meta.metarun import meta_train
from zofo.meta.options import MetaTrainConfig
from zofo.run.logs import read_log

DATA_PARALLEL = ("bilevel-zofo", "bilevel-fo", "fo-peft", "fo-full", "mezo")
#: launches refused at start: each rank's option changes, and the words the message must hold
WRONG = {
    "seed": (lambda rank: {"seed": rank}, ["rank 1 resolved seed=1 where rank 0 has 0", "same flags"]),
    "batch": (lambda rank: {"batch_size": 3}, ["batch_size 3 does not divide among 2 ranks", "--batch-size 4"]),
}


def config(split: Path, model: Path, out: Path, **changes) -> MetaTrainConfig:
    """Three tiny tasks, T = 2 of them a step, K = 2, 4 steps with dev every 2; batches of 4 examples per task."""
    base = dict(split=str(split), model=str(model), out=str(out), tasks_per_step=2, lower_steps=2, upper=8, lower=12,
                n_dev=3, lr=1e-3, lr_upper=1e-2, lr_lower=1e-2, batch_size=4, max_length=32, steps=4, log_every=1,
                eval_every=2, device="cpu", progress=False, lam=10.0)
    return MetaTrainConfig(**(base | changes))


def rank_main(rank: int, root: Path, model: Path, split: Path) -> None:
    """One rank: every scenario in turn (errors of the wrong launches written to root/errors-<rank>.json)."""
    for method in DATA_PARALLEL:
        meta_train(config(split, model, root / f"dp-{method}", method=method))
    meta_train(config(split, model, root / "stopped", steps=2))
    meta_train(config(split, model, root / "stopped", steps=4), resume_run=True)
    errors = {}
    for name, (changes, _) in WRONG.items():
        try:
            meta_train(config(split, model, root / f"wrong-{name}", **changes(rank)))
        except ZofoError as err:
            errors[name] = str(err)
    (root / f"errors-{rank}.json").write_text(json.dumps(errors))


@pytest.fixture(scope="module")
def ranks_ran(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The 2-rank runs' root folder, the tiny model and the split file (one spawn for the module)."""
    shared = tmp_path_factory.mktemp("meta-ranks-model")
    model = shared / "tiny-llama"
    from tests.tiny import build_tiny_tokenizer, tiny_model

    tokenizer = build_tiny_tokenizer()
    tiny_model("llama", vocab_size=len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    split = write_split(shared)
    root = spawn_ranks(rank_main, lambda attempt: tmp_path_factory.mktemp(f"meta-ranks-{attempt}"), model, split)
    return root, model, split


def run_weights(run: Path) -> dict[str, torch.Tensor]:
    """The final backbone, the shared adapter (fo-peft) and every task's block with its Adam states (bilevel)."""
    files = [run / "final" / "backbone.safetensors", *sorted((run / "final").glob("adapter/**/*.safetensors"))]
    out = {f"{f.relative_to(run)}:{k}": v for f in files if f.exists() for k, v in load_file(str(f)).items()}
    state = load_file(str(run / "checkpoint" / "method_state.safetensors"))
    return out | {f"state:{k}": v for k, v in state.items() if "blocks" in k}


def model_start(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The blocks' starting point as far as LoRA's B goes (zero); A starts random and is left as it is."""
    return {k: torch.zeros_like(v) if ".lora_B." in k else v for k, v in weights.items()}


def moved(weights: dict[str, torch.Tensor], model: Path) -> float:
    """How far training took the backbone from the base model."""
    base = load_file(str(model / "model.safetensors"))
    final = {k.split(":", 1)[1]: v for k, v in weights.items() if k.startswith("final/backbone")}
    return differences(final, {k: base[k] for k in final}).max().item()


def parts(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in weights.items() if k.startswith(prefix)}


@pytest.mark.parametrize("method, theta_tolerance, quantile, block_tolerance", [
    ("bilevel-zofo", 2e-6, 1.0, 1e-4), ("fo-peft", 1e-6, 1.0, None), ("bilevel-fo", 1e-5, 0.5, None),
    ("fo-full", 1e-5, 0.5, None), ("mezo", 2e-6, 1.0, None)])
def test_a_data_parallel_meta_train_run_equals_one_process_with_the_global_batch(tmp_path, ranks_ran, method,
                                                                                 theta_tolerance, quantile,
                                                                                 block_tolerance):
    root, model, split = ranks_ran
    meta_train(config(split, model, tmp_path / method, method=method))
    alone, apart = run_weights(tmp_path / method), run_weights(root / f"dp-{method}")
    assert alone.keys() == apart.keys()
    final = differences(parts(alone, "final/"), parts(apart, "final/")).quantile(quantile).item()
    assert final < theta_tolerance < moved(alone, model) / 100  # training moved the backbone far more
    if block_tolerance is not None:  # every task's block and its Adam states, after Adam steps at lr 1e-2
        blocks = differences(parts(alone, "state:"), parts(apart, "state:")).max().item()
        assert blocks < block_tolerance < differences(parts(alone, "state:.blocks.values"),
                                                      parts(model_start(alone), "state:.blocks.values")).max() / 100
    logged = [r for r in read_log(root / f"dp-{method}") if r["phase"] == "train"]
    expected = [r for r in read_log(tmp_path / method) if r["phase"] == "train"]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]  # rank 0 alone wrote the log
    assert [r["loss"] for r in logged] == pytest.approx([r["loss"] for r in expected], rel=1e-4)
    dev = [[(r["step"], r["accuracy"]) for r in read_log(run) if r["phase"] == "dev"]
           for run in (root / f"dp-{method}", tmp_path / method)]
    assert dev[0] == dev[1] and [s for s, _ in dev[0]] == [0, 2, 4]  # every dev example, gathered from both ranks


def test_a_bilevel_zofo_step_sends_the_probe_losses_and_the_blocks_gradients_only(ranks_ran):
    """Per outer step: the [2, T] float64 probe losses (one all-reduce), z_i's gradients in each of the K lower steps
    and p_i's in the upper step of each of the T tasks (float32, one all-reduce each); nothing of the backbone."""
    root, _, _ = ranks_ran
    result = json.loads((root / "dp-bilevel-zofo" / "result.json").read_text())
    blocks = load_file(str(root / "dp-bilevel-zofo" / "checkpoint" / "method_state.safetensors"))
    z_per_task = sum(v[0].numel() for k, v in blocks.items() if k.startswith(".blocks.values.") and ".z." in k)
    steps, tasks, lower = 4, 2, 2
    assert z_per_task > 0
    assert result["ranks"] == {"world": 2, "collectives": steps * (1 + tasks * (lower + 1)),
                               "sent_bytes": steps * (2 * tasks * 8 + tasks * (lower + 1) * z_per_task * 4),
                               "control_bytes": steps * 8}
    assert json.loads((root / "dp-bilevel-zofo" / "final" / "trajectory.json").read_text())["updates"]


def test_a_2_rank_run_stopped_and_resumed_equals_the_straight_2_rank_run_bit_for_bit(ranks_ran):
    root, _, _ = ranks_ran
    a, b = run_weights(root / "stopped"), run_weights(root / "dp-bilevel-zofo")
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert [r["step"] for r in read_log(root / "stopped") if r["phase"] == "train"] == [1, 2, 3, 4]


@pytest.mark.parametrize("name", list(WRONG))
def test_a_wrong_meta_train_launch_is_refused_on_every_rank_with_what_and_how(ranks_ran, name):
    root, _, _ = ranks_ran
    for rank in range(WORLD):
        message = json.loads((root / f"errors-{rank}.json").read_text())[name]
        assert all(words in message for words in WRONG[name][1]), message
    assert not (root / f"wrong-{name}").exists()


def test_torchrun_zofo_meta_train_as_a_process(ranks_ran, tmp_path):
    """`torchrun --nproc-per-node 2 -m zofo.cli.main meta-train ...`: exit 0, one report, the run folder written."""
    _, model, split = ranks_ran
    flags = ["--split", str(split), "--model", str(model), "--out", str(tmp_path / "run"), "--tasks-per-step", "2",
             "--lower-steps", "1", "--upper", "8", "--lower", "12", "--n-dev", "2", "--batch-size", "2",
             "--max-length", "32", "--steps", "1", "--device", "cpu", "--no-progress"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "zofo.cli.main", "meta-train", *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run folder:") == 1
    assert json.loads((tmp_path / "run" / "result.json").read_text())["ranks"]["world"] == 2


def test_meta_test_is_still_refused_under_torchrun(monkeypatch, capsys):
    """Meta-testing adapts each task in one process: launched by torchrun it is refused before anything runs."""
    from zofo.cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["meta-test", "--split", "none.yaml"]) == 2
    assert "zofo: error: zofo meta-test runs in one process, not under torchrun" in capsys.readouterr().err
