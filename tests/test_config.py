"""Config: YAML + dotted overrides, typed validation with key paths, resolved config round trip."""

from __future__ import annotations

import pytest

from zofo.api import load_config
from zofo.config import save_config
from zofo.errors import ZofoError


def test_defaults_yaml_and_overrides_layer(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-5\ntrain:\n  steps: 20\n")
    cfg = load_config(path, ["train.steps=30", "peft.kind=prefix", "peft.target_modules=q_proj,v_proj"])
    assert cfg.optim.lr == 1e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.train.steps == 30
    assert cfg.peft.kind == "prefix" and cfg.peft.target_modules == ["q_proj", "v_proj"]
    assert cfg.bilevel.lam == 1e4 and cfg.bilevel.lower_steps == 10


def test_unknown_key_names_its_path(tmp_path):
    with pytest.raises(ZofoError, match="unknown config key 'optim.learning_rate'"):
        load_config(None, ["optim.learning_rate=1e-3"])
    path = tmp_path / "bad.yaml"
    path.write_text("modle:\n  name: x\n")
    with pytest.raises(ZofoError, match="unknown config key 'modle'"):
        load_config(path)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ZofoError, match=r"train.steps='many' is not of type int"):
        load_config(None, ["train.steps=many"])
    with pytest.raises(ZofoError, match="train.progress"):
        load_config(None, ["train.progress=3"])


def test_bad_yaml_reports_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  steps: 3\n  batch_size: [1,\n")
    with pytest.raises(ZofoError, match=r"broken.yaml:\d+: not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("text, line, first", [
    ("train:\n  steps: 3\n  lr_note: x\n  steps: 30\n", 4, 2),        # in one section
    ("train:\n  steps: 3\noptim:\n  lr: 1e-5\ntrain:\n  log_every: 5\n", 5, 1),  # a section given twice
])
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, text, line, first):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ZofoError, match=rf"twice.yaml:{line}: key '\w+' is given twice in one mapping "
                                        rf"\(first on line {first}\)"):
        load_config(path)


def test_keys_that_yaml_reads_as_different_are_not_a_repeat(tmp_path):
    from pathlib import Path

    from zofo.config import parse_yaml

    assert parse_yaml(Path("x.yaml"), '1: a\n"1": b\n')[0] == {1: "a", "1": "b"}


def test_the_same_key_in_different_sections_is_not_a_repeat(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  method: bilevel-zofo\noptim:\n  lr: 1e-6\nbilevel:\n  lam: 2.0\n")
    assert load_config(path).bilevel.lam == 2.0


@pytest.mark.parametrize("text, overrides, error", [
    ("optim:\n  lr: 1e-5\ntrain:\n  method: mezo\n  steps: ten\n", [],
     r"run.yaml:5: config train.steps='ten' is not of type int"),
    ("train:\n  method: mezo\n  stpes: 3\n", [], r"run.yaml:3: unknown config key 'train.stpes'"),
    # checked against a fixed set or against each other (api.check_options), also on loading
    ("train:\n  method: mezo\noptim:\n  lr: 1e-6\n  direction: uniform\n", [],
     r"run.yaml:5: unknown zo.direction 'uniform' \(use one of: gaussian"),  # read at its new key
    ("train:\n  method: mezo\npeft:\n  kind: lora\n", [], r"run.yaml:4: --peft lora does not apply to method mezo"),
    # the override's value is wrong, not the file's: no file and line
    ("train:\n  steps: ten\n", ["train.steps=x"], r"^config train.steps='x'"),
    ("train:\n  method: bilevel-zofo\nbilevel:\n  lam: -2\n", ["bilevel.lam=-1"], r"^bilevel.lam must be >= 0"),
])
def test_an_error_in_a_value_from_the_file_names_the_file_and_line(tmp_path, text, overrides, error):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ZofoError, match=error):
        load_config(path, overrides)


def test_an_override_replaces_a_bad_value_of_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  method: bilevel-zofo\n  steps: ten\nbilevel:\n  lam: -2\n")
    cfg = load_config(path, ["train.steps=7", "bilevel.lam=10"])
    assert (cfg.train.steps, cfg.bilevel.lam) == (7, 10)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["optim.lr=3e-6", "data.task=rte", "train.output_dir=somewhere"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("override, error", [
    ("optim.lr=-1", r"^optim.lr must be >= 0, got -1.0 \(0 leaves those weights unchanged"),
    ("optim.lr_upper=-1e-4", r"^optim.lr_upper must be >= 0, got -0.0001"),
    ("optim.lr_lower=-1e-4", r"^optim.lr_lower must be >= 0, got -0.0001"),
    ("zo.eps=0", r"^zo.eps must be > 0, got 0.0 \(the paper uses 1e-3\)"),
    ("zo.momentum=1", r"^zo.momentum must be in \[0, 1\), got 1.0"),
    ("bilevel.upper_fraction=1", r"^bilevel.upper_fraction must lie in \(0, 1\)"),
    ("bilevel.lower_steps=0", r"^bilevel.lower_steps \(K\) must be >= 1, got 0"),
    ("peft.dropout=1.5", r"^peft.dropout must be in \[0, 1\), got 1.5"),
    ("train.log_every=0", r"^train.log_every must be >= 1, got 0"),
    ("train.n_eval_dev=0", r"^train.n_eval_dev must be >= 1, got 0 \(unset: every dev example\)"),
    ("data.n_test=0", r"^data.n_test must be >= 1, got 0"),
])
def test_a_value_out_of_its_range_is_refused_naming_the_key(override, error):
    with pytest.raises(ZofoError, match=error):
        load_config(None, [override])


def test_a_zero_learning_rate_and_an_unset_budget_are_fine():
    cfg = load_config(None, ["optim.lr=0", "optim.lr_upper=0", "train.max_seconds=null"])
    assert (cfg.optim.lr, cfg.optim.lr_upper, cfg.train.max_seconds) == (0.0, 0.0, None)


def test_an_out_of_range_value_in_a_file_names_its_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  method: mezo\noptim:\n  lr: 1.0e-6\n  lr_lower: -1.0e-4\n")
    with pytest.raises(ZofoError, match=rf"^{path}:5: optim.lr_lower must be >= 0, got -0.0001"):
        load_config(path)


@pytest.mark.parametrize("method", ["mezo", "bilevel-zofo", "fo-peft"])
def test_zero_steps_are_refused_for_a_method_that_trains(method):
    with pytest.raises(ZofoError, match=rf"^train.steps is 0: method {method} would train for no step \(give "
                                        r"--steps N >= 1; to only evaluate, use --method zero-shot"):
        load_config(None, [f"train.method={method}", "train.steps=0"])
    assert load_config(None, ["train.method=zero-shot", "train.steps=0"]).train.steps == 0


@pytest.mark.parametrize("old, new, value", [("optim.eps", "zo.eps", 0.01), ("optim.theta_update", "zo.rule", "adam"),
                                             ("optim.update_every", "zo.update_every", 4),
                                             ("data.shots", "icl.shots", 3)])
def test_a_renamed_key_is_read_at_its_new_place_with_a_warning_naming_it(tmp_path, old, new, value):
    section, key = old.split(".")
    method = "icl" if new.startswith("icl") else "mezo"
    path = tmp_path / "old.yaml"
    path.write_text(f"train:\n  method: {method}\n{section}:\n  {key}: {value}\n")
    with pytest.warns(FutureWarning, match=rf"{old} is now {new}"):
        cfg = load_config(path)
    new_section, new_key = new.split(".")
    assert getattr(getattr(cfg, new_section), new_key) == value
    assert not hasattr(getattr(cfg, section), key)
    with pytest.raises(ZofoError, match=f"both {old} and {new}"):
        load_config(None, [f"{old}={value}", f"{new}={value}"])


def test_the_saved_config_has_the_new_layout(tmp_path):
    """`zofo config` and every run's config.yaml list the shared ZO settings under `zo`, each method's own
    options under its section, and read back without a warning."""
    import warnings

    import yaml

    cfg = load_config(None, ["zo.q=2", "bilevel.lam=5"])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert list(saved) == ["model", "data", "peft", "optim", "zo", "bilevel", "icl", "train"]
    assert saved["zo"]["q"] == 2 and saved["bilevel"]["lam"] == 5 and "eps" not in saved["optim"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("override, message", [("zo.eps=0", "zo.eps must be > 0"), ("zo.q=0", "zo.q must be positive"),
                                               ("zo.rule=lion", "unknown zo.rule 'lion'"),
                                               ("zo.update_every=4", "zo.update_every=4 needs zo.rule=sgd")])
def test_zo_options_check_their_own_values(override, message):
    extra = ["zo.rule=adam"] if "update_every" in override else []
    with pytest.raises(ZofoError, match=message) as error:
        load_config(None, [override, *extra])
    assert error.value.key == override.split("=")[0]


@pytest.mark.parametrize("override", ["optim.lr=inf", "optim.lr_upper=-inf", "zo.eps=nan", "bilevel.lam=inf"])
def test_a_value_that_is_not_finite_is_refused(override):
    """inf and nan passed every range check (a NaN compares false both ways) and trained on NaN losses."""
    key, value = override.split("=")
    with pytest.raises(ZofoError, match=rf"^config {key}='{value}' is not a finite number \(give {key} a finite"):
        load_config(None, ["train.method=bilevel-zofo", override])


def test_a_config_file_that_is_not_utf8_names_its_line(tmp_path):
    """A UnicodeDecodeError traceback, before."""
    config = tmp_path / "latin.yaml"
    config.write_bytes("train:\n  steps: 5\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ZofoError, match=rf"^{config}:3: not UTF-8 text \(save the file as UTF-8\)$"):
        load_config(config)


def test_a_folder_given_as_the_config_file_is_refused_with_what_to_give(tmp_path):
    with pytest.raises(ZofoError, match=rf"config file {tmp_path} is a folder, not a YAML file \(give the .yaml"):
        load_config(tmp_path)


@pytest.mark.parametrize("device, known", [("cpu", True), ("cuda:1", True), ("auto", True), ("gpu", False),
                                           ("cuda:x", False)])
def test_a_device_torch_does_not_know_is_refused_before_anything_loads(device, known):
    if known:
        assert load_config(None, [f"model.device={device}"]).model.device == device
    else:
        with pytest.raises(ZofoError, match=rf"unknown model.device '{device}' \(use auto, cpu, cuda or cuda:N\)"):
            load_config(None, [f"model.device={device}"])


def test_a_resume_with_fewer_steps_than_its_checkpoint_is_refused(tmp_path):
    from zofo.run.options import prepared

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    save_config(load_config(None, ["train.steps=10"]), run / "config.yaml")
    (run / "checkpoint" / "loop.json").write_text('{"step": 5}')
    with pytest.raises(ZofoError, match=r"train.steps 3 is below the checkpoint's step 5 \(give --steps 5 or more"):
        prepared(load_config(None, [f"train.resume={run / 'checkpoint'}", "train.steps=3"]))
    assert prepared(load_config(None, [f"train.resume={run / 'checkpoint'}", "train.steps=5"])).train.steps == 5


def test_an_unknown_task_is_refused_when_the_config_is_built_and_the_families_pass(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  task: sst3\n")
    with pytest.raises(ZofoError, match=r"run.yaml:2: unknown data.task 'sst3' \(choose one of: boolq, cb, .*sst2"):
        load_config(path)
    for task in ("sst2", "bigbench:strategyqa", "bigbench", "metaicl:glue-sst2"):
        assert load_config(None, [f"data.task={task}"]).data.task == task
