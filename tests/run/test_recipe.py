"""End-to-end runs through the public API: resume, saving, refusals, the real model on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zofo import api
from zofo.api import load_config
from zofo.cli.main import main
from zofo.config import flat
from zofo.errors import ZofoError
from zofo.run.options import RunConfig, resumed_config


def tiny_run(model_dir, shared_data, out, *extra):
    return load_config(None, [
        f"model.name={model_dir}", "data.task=sst2", f"data.data={shared_data / 'sst2'}", "data.n_train=48",
        "data.n_dev=16", "data.n_test=16", "data.max_length=48", "train.batch_size=4", "train.eval_every=3",
        "train.progress=false", f"train.output_dir={out}", "optim.lr=1e-3", "optim.lr_upper=1e-2",
        "optim.lr_lower=1e-2", "bilevel.lower_steps=2", *extra])


def final_weights(run) -> dict[str, torch.Tensor]:
    """The final backbone and every saved adapter, by file and name (checkpoint/ keeps a ZO backbone as a trajectory,
    so a ZO run's weights are compared here)."""
    files = [run / "final" / "backbone.safetensors", *sorted((run / "final").glob("adapter/**/*.safetensors"))]
    return {f"{f.relative_to(run)}:{k}": v for f in files if f.exists() for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("method", ["bilevel-zofo", "fo-peft", "mezo"])
def test_resume_is_bit_identical(tmp_path, tiny_model_dir, shared_data, method):
    straight = tiny_run(tiny_model_dir, shared_data, tmp_path / "straight", f"train.method={method}",
                        "train.steps=6")
    straight_result = api.train(straight)
    first_half = tiny_run(tiny_model_dir, shared_data, tmp_path / "resumed", f"train.method={method}",
                          "train.steps=3")
    api.train(first_half)
    second_half = tiny_run(tiny_model_dir, shared_data, tmp_path / "resumed", f"train.method={method}",
                           "train.steps=6", f"train.resume={tmp_path / 'resumed' / 'checkpoint'}")
    second_result = api.train(second_half)
    assert second_result["work"] == straight_result["work"] and straight_result["work"]["forward_rows"] > 0
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "weights.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint" / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loop = json.loads((tmp_path / "resumed" / "checkpoint" / "loop.json").read_text())
    assert loop["step"] == 6


def test_resume_alone_reads_the_runs_settings_and_ends_where_the_straight_run_does(tmp_path, tiny_model_dir,
                                                                                    shared_data):
    straight = api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "straight", "train.method=mezo",
                                  "train.steps=6"))
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=mezo", "train.steps=3"))
    checkpoint = tmp_path / "run" / "checkpoint"
    resumed = api.train(load_config(None, [f"train.resume={checkpoint}", "train.steps=6", "train.progress=false"]))
    assert resumed["config"]["optim"]["lr"] == 1e-3 and resumed["config"]["model"]["name"] == str(tiny_model_dir)
    assert load_config(tmp_path / "run" / "config.yaml").train.resume is None  # as --config: a run, not a resume
    assert resumed["steps"] == 6 and resumed["work"] == straight["work"]
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "weights.safetensors"))
    b = load_file(str(checkpoint / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "run")
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_setting_that_differs_from_the_runs(tmp_path, tiny_model_dir, shared_data):
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=mezo", "train.steps=2"))
    checkpoint = tmp_path / "run" / "checkpoint"
    with pytest.raises(ZofoError, match=r"optim\.lr is 0\.005 here, 0\.001 in the run .*config\.yaml\) \(resume "
                                        r"with the run's settings"):
        api.train(load_config(None, [f"train.resume={checkpoint}", "optim.lr=5e-3"]))
    with pytest.raises(ZofoError, match="no checkpoint with its run's config.yaml there"):
        api.train(load_config(None, [f"train.resume={tmp_path / 'run'}"]))  # the run folder, not its checkpoint


def test_a_resumed_run_takes_what_the_command_sets_even_where_it_equals_the_default(tmp_path, tiny_model_dir,
                                                                                    shared_data):
    """--steps 1000 (the default) extends a run of 2 steps; a setting equal to its default that the run's differs
    from (batch size 16 against the run's 4) is refused, not dropped."""
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=mezo", "train.steps=2",
                       "train.max_seconds=30"))
    checkpoint = tmp_path / "run" / "checkpoint"
    default = flat(RunConfig())
    assert default["train.steps"] == 1000 and default["train.max_seconds"] is None
    taken = resumed_config(load_config(None, [f"train.resume={checkpoint}", "train.steps=1000",
                                              "train.max_seconds=null"]))
    assert taken.train.steps == 1000 and taken.train.max_seconds is None  # once dropped: steps 2, max_seconds 30
    assert default["train.batch_size"] == 16 and load_config(tmp_path / "run" / "config.yaml").train.batch_size == 4
    with pytest.raises(ZofoError, match=r"train\.batch_size is 16 here, 4 in the run"):
        resumed_config(load_config(None, [f"train.resume={checkpoint}", "train.batch_size=16"]))


def test_a_run_started_with_relative_paths_resumes_from_any_folder_and_from_a_checkpoint_left_as_old(
        tmp_path, tiny_model_dir, shared_data, monkeypatch):
    """config.yaml keeps the model and data as absolute paths: a resume elsewhere once loaded whatever model of
    that relative name the new folder had. A checkpoint killed between its two renames (RUN/checkpoint.old) is put
    back by the resume."""
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    shutil.copytree(shared_data / "sst2", tmp_path / "sst2")
    monkeypatch.chdir(tmp_path)
    api.train(tiny_run("tiny", tmp_path, "run", "train.method=mezo", "train.steps=2", "data.data=sst2"))
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.model.name == str(tmp_path / "tiny") and saved.data.data == str(tmp_path / "sst2")
    (tmp_path / "run" / "checkpoint").replace(tmp_path / "run" / "checkpoint.old")
    (tmp_path / "elsewhere" / "tiny").mkdir(parents=True)  # a folder of the same relative name, and no model
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed = api.train(load_config(None, [f"train.resume={tmp_path / 'run' / 'checkpoint'}", "train.steps=3"]))
    assert resumed["steps"] == 3 and resumed["config"]["model"]["name"] == str(tmp_path / "tiny")
    assert not list((tmp_path / "elsewhere").glob("run*"))


def test_a_second_run_into_a_folder_is_refused_while_the_first_holds_it_or_once_the_first_filled_it(
        tmp_path, tiny_model_dir, shared_data):
    """Both passed the folder check before either wrote (two runs of one shell loop, one time-stamped name), and
    their files mixed."""
    from zofo.run.lock import locked
    from zofo.run.options import prepared
    from zofo.run.recipe import Run

    run = tmp_path / "run"
    cfg = prepared(tiny_run(tiny_model_dir, shared_data, run, "train.method=mezo", "train.steps=1"))
    run.mkdir()
    with locked(run, "zofo train"), pytest.raises(ZofoError, match=r"another zofo train is running on .*run"):
        Run(cfg).execute()
    assert [p.name for p in run.iterdir()] == [".lock"]
    late = prepared(tiny_run(tiny_model_dir, shared_data, run, "train.method=mezo", "train.steps=1"))
    api.train(tiny_run(tiny_model_dir, shared_data, run, "train.method=mezo", "train.steps=1"))  # fills it first
    with pytest.raises(ZofoError, match=r"run folder .*run already holds"):
        Run(late).execute()
    named = prepared(tiny_run(tiny_model_dir, shared_data, "", "train.method=mezo", "train.steps=1"))
    assert named.train.output_dir.startswith("runs/mezo-sst2-")  # the time-stamped name is fixed once


def test_a_path_given_through_a_link_is_kept_as_given_and_its_target_is_the_same_path_to_a_resume(
        tmp_path, tiny_model_dir, shared_data):
    """../shared beside a fresh clone is often a link: the saved path kept the target's spelling and a resume that
    named the data as the tests do was refused as another setting."""
    (tmp_path / "link").symlink_to(shared_data.resolve(), target_is_directory=True)
    api.train(tiny_run(tiny_model_dir, tmp_path / "link", tmp_path / "run", "train.method=mezo", "train.steps=2"))
    assert load_config(tmp_path / "run" / "config.yaml").data.data == str(tmp_path / "link" / "sst2")
    checkpoint = tmp_path / "run" / "checkpoint"
    for data in (tmp_path / "link" / "sst2", shared_data.resolve() / "sst2"):
        cfg = resumed_config(load_config(None, [f"train.resume={checkpoint}", f"data.data={data}", "train.steps=3"]))
        assert cfg.train.steps == 3


def test_run_folder_has_config_logs_result_and_plot(tmp_path, tiny_model_dir, shared_data):
    result = api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=bilevel-zofo",
                                "train.steps=4", "peft.kind=prefix", "peft.num_virtual_tokens=3"))
    run = tmp_path / "run"
    assert load_config(run / "config.yaml").peft.kind == "prefix"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"train", "dev", "test"} <= {r["phase"] for r in log}
    clocks = [r["train_time"] for r in log]
    assert clocks == sorted(clocks) and all(r["train_time"] <= r["time"] for r in log)
    assert log[-1]["time"] - log[-1]["train_time"] > 0  # the evaluations (and the final test) were left out
    assert result["train_seconds_without_evaluation"] < result["train_seconds"]
    assert 0.0 <= result["test"]["accuracy"] <= 1.0 and result["test"]["n"] == 16
    assert list((run / "tensorboard").iterdir())
    assert (run / "final" / "adapter").exists() and (run / "best" / "weights.safetensors").exists()
    assert main(["plot", str(run)]) == 0 and (run / "curves.png").stat().st_size > 10_000


def test_zofo_train_prints_test_metrics_training_time_and_the_run_folder(tmp_path, tiny_model_dir, shared_data,
                                                                         capsys):
    settings = ["data.n_train=16", "data.n_dev=8", "data.n_test=8", "data.max_length=48", "train.batch_size=4",
                "train.eval_every=1", "train.progress=false", f"train.output_dir={tmp_path / 'run'}"]
    code = main(["train", "--method", "mezo", "--model", str(tiny_model_dir), "--task", "sst2", "--data",
                 str(shared_data / "sst2"), "--steps", "2", *[a for s in settings for a in ("--set", s)]])
    out = capsys.readouterr().out.splitlines()
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert code == 0 and f"test accuracy: {result['test']['accuracy']:.4f}" in out
    assert (f"training: 2 steps, {result['train_seconds']:.1f} s "
            f"({result['train_seconds_without_evaluation']:.1f} s without evaluations)") in out
    assert out[-1] == f"run folder: {tmp_path / 'run'}"


def test_an_icl_run_records_the_demonstrations_it_used_not_those_it_asked_for(tmp_path, tiny_model_dir,
                                                                            shared_data):
    asked = api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "four", "train.method=icl", "icl.shots=4"))
    # six labelled examples in all: the train split sampled from them holds fewer than the 4 shots asked for
    tiny = Path(__file__).parents[1] / "fixtures" / "metaicl"
    fewer = api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "all", "train.method=icl", "icl.shots=4",
                               "data.task=metaicl:tiny_sst", f"data.data={tiny}", "data.n_train=16"))
    zero = api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "zero", "train.method=zero-shot"))
    assert (asked["shots"], zero["shots"]) == (4, 0) and 1 <= fewer["shots"] < 4
    assert json.loads((tmp_path / "all" / "result.json").read_text())["shots"] == fewer["shots"]
    with pytest.raises(ZofoError, match=r"icl.shots 9 with data.n_train 6: the demonstrations are drawn from the"):
        api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "nine", "train.method=icl", "icl.shots=9",
                           "data.n_train=6"))


@pytest.mark.parametrize("args, message", [
    (["--method", "fo-full", "--peft", "lora"], "does not apply to method fo-full"),
    (["--method", "bilevel-zofo", "--lower-steps", "0"], "K"),
    (["--method", "icl"], "needs --shots"),
    (["--method", "sgd-magic"], "unknown method 'sgd-magic'"),
    (["--method", "mezo", "--steps", "-1"], "train.steps must be >= 0, got -1"),
    (["--method", "mezo", "--set", "train.max_train_seconds=0"], "train.max_train_seconds must be > 0, got 0.0"),
    (["--method", "mezo", "--set", "train.max_seconds=-5"], "train.max_seconds must be > 0, got -5.0"),
    (["--method", "mezo", "--task", "squad"], "task squad is generative"),
    (["--method", "mezo", "--direction", "uniform"], "unknown zo.direction 'uniform'"),
    (["--method", "mezo", "--dtype", "float8"], "unknown model.dtype 'float8'"),
    (["--method", "fo-peft", "--peft", "adapter"], "unknown peft.kind 'adapter'"),
    (["--method", "mezo", "--theta-update", "adamw"], "unknown zo.rule 'adamw'"),
])
def test_inconsistent_options_are_refused_before_loading(args, message, capsys):
    assert main(["train", "--model", "/no/such/model", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_options_check_runs_before_any_model_is_loaded():
    with pytest.raises(ZofoError, match="does not apply"):
        api.check_options(load_config(None, ["train.method=mezo", "peft.kind=prompt"]))


@pytest.mark.slow
def test_real_smollm2_bilevel_zofo_on_sst2_saves_an_adapter_that_loads_back(tmp_path, shared_data):
    from peft import PeftModel

    from zofo.models.load import load_model

    cfg = load_config(None, [
        "model.name=smollm2-135m", "train.method=bilevel-zofo", "data.task=sst2",
        f"data.data={shared_data / 'sst2'}", "data.n_train=24", "data.n_dev=8", "data.n_test=8",
        "data.max_length=64", "train.batch_size=2", "train.steps=2", "bilevel.lower_steps=1",
        "train.eval_every=0", "train.progress=false", f"train.output_dir={tmp_path / 'run'}", "optim.lr=1e-6"])
    result = api.train(cfg)
    assert result["steps"] == 2 and result["test"]["n"] == 8
    base, _ = load_model("smollm2-135m")
    adapter_dir = tmp_path / "run" / "final" / "adapter" / "p"
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert loaded and any(p.abs().sum() > 0 for n, p in loaded.items() if "lora_B" in n)


@pytest.mark.parametrize(("method", "extra"), [
    ("mezo", ["model.dtype=bfloat16", "zo.update_every=4"]),  # chained updates, the last flushed at the end
    ("bilevel-zofo", [])])
def test_zofo_replay_rebuilds_the_backbone_bit_for_bit(tmp_path, tiny_model_dir, shared_data, method, extra, capsys):
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", f"train.method={method}", "train.steps=6",
                       *extra))
    final = tmp_path / "run" / "final"
    trajectory = json.loads((final / "trajectory.json").read_text())
    assert trajectory["complete"] and len(trajectory["updates"]) == (2 if method == "mezo" else 6)
    assert main(["replay", str(tmp_path / "run")]) == 0
    saved = load_file(str(final / "backbone.safetensors"))
    replayed = load_file(str(final / "backbone.replayed.safetensors"))
    assert saved.keys() == replayed.keys() and all(torch.equal(saved[k], replayed[k]) for k in saved)
    out = capsys.readouterr().out
    assert f"{len(saved)} of {len(saved)} tensors bit-identical, largest difference 0" in out
    assert ("replayed 6 steps (2 updates, merged" if method == "mezo" else "replayed 6 steps (6 updates)") in out
    from zofo.run.replay import base_backbone

    base = base_backbone(load_config(tmp_path / "run" / "config.yaml"), None)  # what training started from
    assert sum(not torch.equal(saved[k], base[k].detach()) for k in saved) >= len(saved) // 2


def test_a_resumed_run_keeps_its_trajectory_and_replays_to_its_weights(tmp_path, tiny_model_dir, shared_data):
    first = tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=mezo", "train.steps=3")
    api.train(first)
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=mezo", "train.steps=6",
                       f"train.resume={tmp_path / 'run' / 'checkpoint'}"))
    from zofo.run.replay import replay_run

    report = replay_run(tmp_path / "run")
    assert report.steps == report.updates == 6 and report.identical == report.tensors and report.max_abs_diff == 0.0


def test_replay_says_what_is_missing(tmp_path, tiny_model_dir, shared_data):
    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=fo-peft", "train.steps=2"))
    from zofo.run.replay import replay_run

    with pytest.raises(ZofoError, match="trajectory.json does not exist"):
        replay_run(tmp_path / "run")
    (tmp_path / "run" / "final" / "trajectory.json").write_text('{"format": 1, "params": []')  # cut short
    with pytest.raises(ZofoError, match="trajectory.json is not a zofo seed trajectory"):
        replay_run(tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_replaying_a_gpu_run_without_a_gpu_says_how(tmp_path, tiny_model_dir, shared_data):
    from zofo.run.replay import replay_run

    api.train(tiny_run(tiny_model_dir, shared_data, tmp_path / "run", "train.method=mezo", "train.steps=2"))
    config = tmp_path / "run" / "config.yaml"
    config.write_text(config.read_text().replace("device: auto", "device: cuda"))
    with pytest.raises(ZofoError, match="this machine has no CUDA device.*--device cpu"):
        replay_run(tmp_path / "run")
    assert replay_run(tmp_path / "run", device="cpu").max_abs_diff == 0.0


@pytest.mark.parametrize("kind", ["prompt", "lora"])
def test_a_seeds_untrained_start_is_the_same_for_fo_peft_and_bilevel_zofo(tmp_path, tiny_model_dir, shared_data,
                                                                          kind):
    """Bilevel ZOFO's lower copy z is drawn first from the run's seed, as FO-PEFT's only adapter is: on a seed, a
    run deploying z (`bilevel.deploy: z`, as every study run does) starts from FO-PEFT's untrained model, so their
    step-0 evaluations agree (docs/RESULTS.md section 19)."""
    from zofo.run.recipe import Run

    def start(method: str, seed: int) -> dict[str, torch.Tensor]:
        cfg = tiny_run(tiny_model_dir, shared_data, tmp_path / method, f"train.method={method}",
                       f"peft.kind={kind}", f"train.seed={seed}")
        _, _, groups = Run(cfg).build_model()
        name = "z" if method == "bilevel-zofo" else "default"
        return {key.replace(f".{name}.", "."): p.detach().clone() for key, p in groups.adapters[name].items()}

    fo, bilevel, other_seed = start("fo-peft", 3), start("bilevel-zofo", 3), start("fo-peft", 4)
    assert fo and fo.keys() == bilevel.keys() == other_seed.keys()
    assert all(torch.equal(fo[key], bilevel[key]) for key in fo)
    assert not all(torch.equal(fo[key], other_seed[key]) for key in fo)  # the seed draws it


def test_a_final_save_killed_half_way_leaves_no_final_folder_and_the_resume_writes_it_whole(
        tmp_path, tiny_model_dir, shared_data, monkeypatch):
    from zofo.run import recipe

    def killed(params, path):  # as safetensors is when the process dies mid-write: its temporary file left behind
        (path.parent / ".tmpAbCdEf").write_bytes(b"\0" * 1024)
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(recipe, "save_weights", killed)
        with pytest.raises(KeyboardInterrupt):
            api.train(tiny_run(tiny_model_dir, shared_data, run, "train.method=mezo", "train.steps=3"))
    assert not (run / "final").exists() and (run / "final.partial" / ".tmpAbCdEf").exists()
    api.train(tiny_run(tiny_model_dir, shared_data, run, "train.method=mezo", "train.steps=3",
                       f"train.resume={run / 'checkpoint'}"))
    assert sorted(p.name for p in (run / "final").iterdir()) == ["backbone.safetensors", "trajectory.json"]
    assert not (run / "final.partial").exists()
    straight = tmp_path / "straight"
    api.train(tiny_run(tiny_model_dir, shared_data, straight, "train.method=mezo", "train.steps=3"))
    a, b = final_weights(straight), final_weights(run)
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
