"""Runs trained together in one process (`api.train_together`) compute what they compute alone."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.run.test_recipe import tiny_run
from zofo import api
from zofo.errors import ZofoError


def _losses(run_dir) -> list[float]:
    return [e["loss"] for e in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in e]


def _weights(run_dir) -> dict[str, torch.Tensor]:
    final = run_dir / "final"
    files = [final / "backbone.safetensors", *final.glob("adapter/*.safetensors")]
    return {f"{f.name}:{k}": v for f in files if f.exists() for k, v in load_file(str(f)).items()}


def test_runs_trained_together_equal_runs_trained_alone(tmp_path, tiny_model_dir, shared_data):
    methods = {"bilevel-zofo": ["peft.kind=lora"], "mezo": [], "fo-peft": ["peft.kind=prompt",
                                                                           "peft.num_virtual_tokens=2"]}

    def configs(where: str) -> list:
        return [tiny_run(tiny_model_dir, shared_data, tmp_path / where / m, f"train.method={m}", "train.steps=4",
                         "train.seed=3", *extra) for m, extra in methods.items()]

    alone = [api.train(cfg) for cfg in configs("alone")]
    together = api.train_together(configs("together"))
    assert not [r for r in together if isinstance(r, Exception)], together
    for method, a, b in zip(methods, alone, together, strict=True):
        assert b["shared_process"] and not a["shared_process"]
        assert a["test"] == b["test"] and a["best_dev"] == b["best_dev"] and a["work"] == b["work"], method
        assert _losses(tmp_path / "alone" / method) == _losses(tmp_path / "together" / method), method
        wa, wb = _weights(tmp_path / "alone" / method), _weights(tmp_path / "together" / method)
        assert wa and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), method


def test_a_failing_run_does_not_stop_the_others(tmp_path, tiny_model_dir, shared_data):
    good = tiny_run(tiny_model_dir, shared_data, tmp_path / "good", "train.method=mezo", "train.steps=2")
    bad = tiny_run(tiny_model_dir, shared_data, tmp_path / "bad", "train.method=mezo", "train.steps=2",
                   f"data.data={tmp_path / 'missing'}")
    results = api.train_together([bad, good])
    assert isinstance(results[0], Exception) and "does not exist" in str(results[0])
    assert results[1]["steps"] == 2 and (tmp_path / "good" / "result.json").exists()


def test_runs_of_one_process_mixing_tf32_with_float32_are_refused_before_any_starts(tmp_path, tiny_model_dir,
                                                                                    shared_data):
    runs = [tiny_run(tiny_model_dir, shared_data, tmp_path / dtype, "train.method=mezo", f"model.dtype={dtype}")
            for dtype in ("tf32", "float32")]
    with pytest.raises(ZofoError, match="mix model.dtype tf32 with float32") as refused:
        api.train_together(runs)
    assert refused.value.key == "model.dtype" and not any((tmp_path / d).exists() for d in ("tf32", "float32"))


@pytest.mark.parametrize("method", ["fo-peft", "fo-full"])
def test_first_order_runs_with_cuda_graphs_on_a_gpu_are_refused_before_any_starts(tmp_path, tiny_model_dir,
                                                                                 shared_data, monkeypatch, method):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # device auto resolves to cuda; nothing loads
    runs = [tiny_run(tiny_model_dir, shared_data, tmp_path / m, f"train.method={m}") for m in ("mezo", method)]
    with pytest.raises(ZofoError, match=rf"{method} with CUDA graphs is not trained beside other runs in one "
                                        r"process: .* \(train it in its own process .* or set train.cuda_graphs "
                                        r"false\)") as refused:
        api.train_together(runs)
    assert refused.value.key == "train.cuda_graphs" and not (tmp_path / "mezo").exists()
    on_cuda_1 = [tiny_run(tiny_model_dir, shared_data, tmp_path / m, f"train.method={m}", "model.device=cuda:1")
                 for m in ("mezo", method)]
    with pytest.raises(ZofoError, match=rf"{method} with CUDA graphs"):
        api.train_together(on_cuda_1)
    from zofo.run.concurrent import _check_no_graphed_first_order

    accepted = [tiny_run(tiny_model_dir, shared_data, tmp_path / m, f"train.method={m}", *extra)
                for m, extra in (("bilevel-zofo", []), ("bilevel-fo", []), (method, ["train.cuda_graphs=false"]),
                                 (method, ["train.max_rows=8"]), (method, ["model.device=cpu"]),
                                 (method, ["train.fsdp=true"]))]
    _check_no_graphed_first_order(accepted)  # graphed bilevel runs, eager, CPU or sharded (never graphed) FO runs
    _check_no_graphed_first_order(runs[1:])  # a graphed first-order run alone in its process


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.filterwarnings("error:CUDA graph capture:RuntimeWarning")  # a run that fell back to eager fails
def test_graphed_runs_trained_together_on_cuda_equal_runs_trained_alone(tmp_path, tiny_model_dir, shared_data):
    """On CUDA every ZO step is a graph replay, captured per thread while the other runs train (FO runs go eagerly:
    graphed, they are refused)."""
    methods = {"mezo": [], "fo-peft": ["peft.kind=lora", "train.cuda_graphs=false"], "bilevel-zofo": ["peft.kind=lora"]}

    def configs(where: str) -> list:
        return [tiny_run(tiny_model_dir, shared_data, tmp_path / where / m, f"train.method={m}", "train.steps=6",
                         "model.device=cuda", "model.dtype=bfloat16", *extra) for m, extra in methods.items()]

    alone = [api.train(cfg) for cfg in configs("alone")]
    together = api.train_together(configs("together"))
    assert not [r for r in together if isinstance(r, Exception)], together
    for method, a, b in zip(methods, alone, together, strict=True):
        assert a["work"] == b["work"] and a["peak_memory_mib"] and not b["peak_memory_mib"], method
        assert _losses(tmp_path / "alone" / method) == _losses(tmp_path / "together" / method), method
        wa, wb = _weights(tmp_path / "alone" / method), _weights(tmp_path / "together" / method)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), method


def test_a_signal_stops_runs_trained_together_with_checkpoints_that_resume_exactly(tmp_path, tiny_model_dir,
                                                                                  shared_data, monkeypatch):
    """The handler is the main thread's; the runs, in their threads, share its request."""
    from tests.run.test_interrupt import signal_at
    from zofo.run.interrupt import TrainingInterrupted

    methods = {"mezo": [], "bilevel-zofo": ["peft.kind=lora"]}

    def configs(where: str, *extra: str) -> list:
        return [tiny_run(tiny_model_dir, shared_data, tmp_path / where / m, f"train.method={m}", "train.steps=6",
                         "train.log_every=1", *more, *extra) for m, more in methods.items()]

    alone = [api.train(cfg) for cfg in configs("alone")]
    with monkeypatch.context() as patch:
        signal_at(patch, 2)  # the first run to log step 2 stops the process
        stopped = api.train_together(configs("together"))
    interrupted = [m for m, r in zip(methods, stopped, strict=True) if isinstance(r, TrainingInterrupted)]
    assert interrupted and all(isinstance(r, (dict, TrainingInterrupted)) for r in stopped), stopped
    resumed = api.train_together([tiny_run(tiny_model_dir, shared_data, tmp_path / "together" / m,
                                           f"train.resume={tmp_path / 'together' / m / 'checkpoint'}")
                                  for m in interrupted])
    assert all(isinstance(r, dict) for r in resumed), resumed
    for method, a in zip(methods, alone, strict=True):
        wa, wb = _weights(tmp_path / "alone" / method), _weights(tmp_path / "together" / method)
        assert wa and all(torch.equal(wa[k], wb[k]) for k in wa), method
        assert json.loads((tmp_path / "together" / method / "result.json").read_text())["work"] == a["work"]
