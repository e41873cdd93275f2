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


@pytest.mark.parametrize("text, overrides, error", [
    ("optim:\n  lr: 1e-5\ntrain:\n  method: mezo\n  steps: ten\n", [],
     r"run.yaml:5: config train.steps='ten' is not of type int"),
    ("train:\n  method: mezo\n  stpes: 3\n", [], r"run.yaml:3: unknown config key 'train.stpes'"),
    # checked against a fixed set or against each other (api.check_options), also on loading
    ("train:\n  method: mezo\noptim:\n  lr: 1e-6\n  direction: uniform\n", [],
     r"run.yaml:5: unknown optim.direction 'uniform' \(use one of: gaussian"),
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
