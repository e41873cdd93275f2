"""checkpoint/ and best/ keep a ZO backbone as its seed trajectory: resume and the test evaluation replay it exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.run.test_interrupt import signal_at
from tests.run.test_recipe import final_weights, tiny_run
from zofo import api
from zofo.api import load_config
from zofo.errors import ZofoError
from zofo.run import recipe as training
from zofo.run.interrupt import TrainingInterrupted

# update_every=2: the interrupted run's checkpoint holds applied updates and a pending one
ZO_METHODS = {"mezo": ["zo.update_every=2"], "bilevel-zofo": ["zo.update_every=2"]}


def backbone_bytes(run) -> int:
    return (run / "final" / "backbone.safetensors").stat().st_size


@pytest.mark.parametrize("method, extra", [*ZO_METHODS.items(), ("mezo", ["zo.rule=momentum"])])
def test_a_compact_checkpoint_resumes_to_the_straight_runs_final_weights_bit_for_bit(tmp_path, tiny_model_dir,
                                                                                     shared_data, monkeypatch, method,
                                                                                     extra):
    """Stopped after step 3 (no evaluation there: with update_every=2 one update applied, one pending), resumed
    from the trajectory; ZO momentum keeps its buffer in the checkpoint, its weights are replayed all the same."""
    settings = [f"train.method={method}", "train.steps=6", "train.log_every=1", "train.eval_every=0", *extra]
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "straight", *settings))
    with monkeypatch.context() as patch:
        signal_at(patch, 3)
        with pytest.raises(TrainingInterrupted):
            api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", *settings))
    checkpoint = tmp_path / "run" / "checkpoint"
    loop = json.loads((checkpoint / "loop.json").read_text())
    state = json.loads((checkpoint / "method_state.json").read_text())
    theta = state["zo"] if method == "mezo" else state["theta"]
    pending = 1 if "zo.update_every=2" in extra else 0
    assert loop["backbone"] == "trajectory" and len(theta["trajectory"]) == 3 - 2 * pending
    assert len(theta["pending"]) == pending
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", *settings, f"train.resume={checkpoint}"))
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "run")
    assert any("backbone" in k for k in a) and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    trajectory = json.loads((tmp_path / "run" / "final" / "trajectory.json").read_text())
    assert trajectory == json.loads((tmp_path / "straight" / "final" / "trajectory.json").read_text())
    assert len(trajectory["updates"]) == 6 - 3 * pending


@pytest.mark.parametrize("method", ZO_METHODS)
def test_a_zo_run_folder_holds_the_backbone_only_in_final(tmp_path, tiny_model_dir, shared_data, method):
    """The same run with checkpoint_weights=full ends with the same weights, and keeps the backbone three times."""
    settings = [f"train.method={method}", "train.steps=4", "train.eval_every=2", *ZO_METHODS[method]]
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "compact", *settings))
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "full", *settings, "train.checkpoint_weights=full"))
    compact, full = tmp_path / "compact", tmp_path / "full"
    a, b = final_weights(compact), final_weights(full)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    backbone = set(load_file(str(compact / "final" / "backbone.safetensors")))
    outside = [f for f in compact.rglob("*") if f.is_file() and "final" not in f.relative_to(compact).parts]
    assert not [f for f in outside if f.suffix == ".safetensors" and backbone & set(load_file(str(f)))]
    assert sum(f.stat().st_size for f in outside) < backbone_bytes(compact)
    assert json.loads((compact / "checkpoint" / "loop.json").read_text())["backbone"] == "trajectory"
    assert (compact / "best" / "trajectory.json").exists()
    for kept in ("checkpoint", "best"):  # the full form: the backbone's weights, as before
        assert backbone <= set(load_file(str(full / kept / "weights.safetensors"))), kept
    assert not (full / "best" / "trajectory.json").exists()


def test_a_method_that_trains_the_backbone_by_gradients_keeps_its_weights(tmp_path, tiny_model_dir, shared_data):
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=fo-full", "train.steps=2"))
    run = tmp_path / "run"
    backbone = set(load_file(str(run / "final" / "backbone.safetensors")))
    assert json.loads((run / "checkpoint" / "loop.json").read_text())["backbone"] == "weights"
    assert backbone <= set(load_file(str(run / "checkpoint" / "weights.safetensors")))
    assert backbone <= set(load_file(str(run / "best" / "weights.safetensors")))


def scripted_dev(monkeypatch, scores: list[float]) -> list[dict[str, torch.Tensor]]:
    """Dev evaluations score ``scores`` in turn; returns the list that gets a copy of every parameter of the model
    at each dev evaluation and then at the test evaluation (as deployed: pending updates applied)."""
    seen: list[dict[str, torch.Tensor]] = []

    def snapshot(model) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def dev(self, stop=None):
        seen.append(snapshot(self.model))
        return {"accuracy": scores[len(seen) - 1], "n": 1}

    test = training.Evaluator.test

    def test_then_record(self):
        seen.append(snapshot(self.model))
        return test(self)

    monkeypatch.setattr(training.Evaluator, "dev", dev)
    monkeypatch.setattr(training.Evaluator, "test", test_then_record)
    return seen


@pytest.mark.parametrize("method", ZO_METHODS)
@pytest.mark.parametrize("scores, best, loads", [([0.1, 0.5, 0.9, 0.3], 2, 2), ([0.1, 0.2, 0.3, 0.4], 3, 1)])
def test_the_test_evaluation_sees_exactly_the_best_dev_weights(tmp_path, tiny_model_dir, shared_data, monkeypatch,
                                                               method, scores, best, loads):
    """Dev at steps 0, 2, 4, 6: the best at step 4 is rebuilt from the base model (a second load), the best at the
    last step is the model as training left it (no second load)."""
    seen = scripted_dev(monkeypatch, scores)
    load_model, calls = training.load_model, []
    monkeypatch.setattr(training, "load_model", lambda *a, **k: calls.append(a) or load_model(*a, **k))
    result = api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", f"train.method={method}",
                                "train.steps=6", "train.eval_every=2", *ZO_METHODS[method]))
    assert result["best_step"] == 2 * best and len(seen) == 5 and len(calls) == loads
    at_test, at_best, at_end = seen[-1], seen[best], seen[3]
    assert all(torch.equal(at_test[k], at_best[k]) for k in at_best)
    if best != 3:  # the weights that training ended with are not the ones tested
        assert not all(torch.equal(at_test[k], at_end[k]) for k in at_end)


def test_an_unknown_checkpoint_form_is_refused():
    with pytest.raises(ZofoError, match=r"unknown train.checkpoint_weights 'both' \(use one of: trajectory, full\)"):
        load_config(None, ["train.checkpoint_weights=both"])


def test_a_best_save_killed_between_its_adapters_and_its_trajectory_leaves_the_previous_best_whole(
        tmp_path, tiny_model_dir, shared_data, monkeypatch):
    """best/ at steps 0, 2, 4 (each dev better); the save at step 4 dies after its adapters' file is written."""
    from zofo.run import loop
    from zofo.zo import Trajectory

    scripted_dev(monkeypatch, [0.1, 0.5, 0.9, 0.95])
    best, saved = tmp_path / "run" / "best", []
    save_best, save_trajectory = loop.save_best, Trajectory.save

    def snapshotted(*args):
        save_best(*args)
        saved.append({f.name: f.read_bytes() for f in best.iterdir()})

    def dies_on_the_third(self, path):
        if path.parent.name.startswith("best") and len(saved) == 2:
            raise KeyboardInterrupt
        save_trajectory(self, path)

    monkeypatch.setattr(loop, "save_best", snapshotted)
    monkeypatch.setattr(Trajectory, "save", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=bilevel-zofo",
                           "train.steps=6", "train.eval_every=2"))
    assert len(saved) == 2 and set(saved[1]) == {"weights.safetensors", "trajectory.json"}
    assert {f.name: f.read_bytes() for f in best.iterdir()} == saved[1]  # step 2's best, both files
    assert all(saved[1][name] != saved[0][name] for name in saved[0])  # the adapters and the backbone moved
