"""benchmarks/adapter_switch.py on a tiny model folder: its report counts the model's modules and times each call."""

from __future__ import annotations

import json

import pytest

from benchmarks.adapter_switch import main


def test_report_is_written_with_every_timing(tmp_path, tiny_model_dir):
    report = main([str(tiny_model_dir), "--calls", "4", "--out", str(tmp_path / "switch.json")])
    assert json.loads((tmp_path / "switch.json").read_text()) == report
    assert report["calls"] == 4 and report["modules"] > 10  # the peft wrapper, the tiny Llama and both adapters
    assert all(report[key] > 0 for key in ("activate_switching_ms", "activate_same_ms", "set_adapter_ms"))


def test_no_calls_is_refused_before_the_model_loads(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["no-such-model", "--calls", "0"])
    assert stopped.value.code == 2
    assert "--calls 0: give 1 or more" in capsys.readouterr().err
