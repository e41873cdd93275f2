"""A signal stops training after the current step with a checkpoint; the resumed run ends as the straight one."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.run.test_recipe import final_weights, tiny_run
from zofo import api
from zofo.cli.main import main
from zofo.run.interrupt import TrainingInterrupted, stacks_on_request, stop_on_signal
from zofo.run.logs import RunLogger, read_log


def test_the_first_signal_asks_to_stop_and_the_second_acts_as_before():
    # Python's own Ctrl-C as the handler before, whatever started the tests (a shell's background job ignores SIGINT)
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        with stop_on_signal() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 5  # the handler runs in the main thread once the interpreter checks for it
            while not stop.requested and time.monotonic() < deadline:
                time.sleep(0.001)
            assert stop.requested and stop.signal == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):  # the second: the handler before, Python's own Ctrl-C
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # both handed back
    finally:
        signal.signal(signal.SIGINT, started_with)


def signal_at(monkeypatch, step: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process, once, when a run first logs training step ``step``, as a user or a
    scheduler would (once: of runs trained together, the first to get there)."""
    log, sent = RunLogger.log, []

    def log_then_signal(self, at, phase, **values):
        log(self, at, phase, **values)
        if phase == "train" and at == step and not sent:
            sent.append(at)
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(RunLogger, "log", log_then_signal)


@pytest.mark.parametrize("method, extra", [("mezo", ["zo.update_every=4"]), ("bilevel-zofo", [])])
def test_an_interrupted_run_resumes_to_the_straight_runs_weights_and_dev_curve(tmp_path, tiny_model_dir,
                                                                               shared_data, monkeypatch, method,
                                                                               extra):
    """Stopped after step 3 (a dev evaluation step, with deferred updates pending for MeZO), then resumed."""
    settings = [f"train.method={method}", "train.steps=6", "train.log_every=1", *extra]
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "straight", *settings))
    with monkeypatch.context() as patch:
        signal_at(patch, 3)
        with pytest.raises(TrainingInterrupted) as stopped:
            api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", *settings))
    checkpoint = tmp_path / "run" / "checkpoint"
    assert stopped.value.step == 3 and stopped.value.checkpoint == checkpoint and stopped.value.exit_code == 143
    assert json.loads((checkpoint / "loop.json").read_text())["step"] == 3
    assert not (tmp_path / "run" / "result.json").exists()
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", *settings, f"train.resume={checkpoint}"))
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "weights.safetensors"))
    b = load_file(str(checkpoint / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "run")
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def dev(run):
        return [(r["step"], r["accuracy"]) for r in read_log(tmp_path / run) if r["phase"] == "dev"]

    assert dev("run") == dev("straight") and [s for s, _ in dev("run")] == [0, 3, 6]


def test_zofo_train_says_where_the_checkpoint_is_and_exits_as_a_signalled_process(tmp_path, tiny_model_dir,
                                                                                  shared_data, monkeypatch, capsys):
    signal_at(monkeypatch, 1, signal.SIGINT)
    settings = ["data.n_train=16", "data.n_dev=8", "data.n_test=8", "data.max_length=48", "train.batch_size=4",
                "train.log_every=1", "train.progress=false", f"train.output_dir={tmp_path / 'run'}"]
    code = main(["train", "--method", "mezo", "--model", str(tiny_model_dir), "--task", "sst2", "--data",
                 str(shared_data / "sst2"), "--steps", "4", *[a for s in settings for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 130  # 128 + SIGINT
    assert f"interrupted by SIGINT after step 1; the checkpoint {tmp_path / 'run' / 'checkpoint'}" in err
    assert f"continue with `zofo train --resume {tmp_path / 'run' / 'checkpoint'}`" in err


def test_stacks_on_request_declines_where_stderr_has_no_file_descriptor(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # as under an embedding that captures stderr in memory
    assert stacks_on_request() is False
    monkeypatch.setattr(sys, "stderr", None)
    assert stacks_on_request() is False
