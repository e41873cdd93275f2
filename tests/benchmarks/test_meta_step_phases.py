"""benchmarks/meta_step_phases.py on the CPU: every phase is timed inside the whole step, and the phases that nest
(encode and swap) add up to no more than the whole."""

from __future__ import annotations

import re

import torch

from benchmarks.meta_step_phases import PHASES, main
from tests.benchmarks.profile_files import profiled_counts
from tests.meta.test_metatrain import write_split


def test_phases_are_timed_and_fit_inside_the_step(tmp_path, tiny_model_dir):
    report = main([str(tiny_model_dir), "--split", str(write_split(tmp_path)), "--steps", "3", "--batch-size", "2",
                   "--tasks-per-step", "2", "--lower-steps", "2", "--max-length", "32", "--upper", "6",
                   "--lower", "12", "--device", "cpu", "--out", str(tmp_path / "phases.json")])
    assert (tmp_path / "phases.json").is_file() and len(report["steps"]) == 3
    for step in report["steps"]:
        assert all(step[phase] > 0 for phase in PHASES)
        top = step["lower"] + step["probes"] + step["p step"] + step["update"]
        assert top <= step["whole step"]  # the four lines of an outer step are disjoint calls inside it
        assert step["swap"] < step["lower"] + step["p step"]  # swaps happen inside those two


def test_profile_writes_the_op_tables_and_python_profile_of_more_steps_with_its_phases(tmp_path, tiny_model_dir):
    profile = tmp_path / "profile"
    report = main([str(tiny_model_dir), "--split", str(write_split(tmp_path)), "--steps", "2", "--batch-size", "2",
                   "--tasks-per-step", "2", "--lower-steps", "2", "--max-length", "32", "--upper", "6",
                   "--lower", "12", "--device", "cpu", "--profile", str(profile),
                   "--python-profile", str(tmp_path / "python.txt")])
    assert len(report["steps"]) == 2  # the profiled steps are not reported
    counts = profiled_counts(profile, "", "lower")
    assert {"outer step", "lower", "probes", "p step"} <= set(counts)  # the phases are labelled ranges
    assert counts["lower"] == 2  # one a task, T = 2
    python = (tmp_path / "python.txt").read_text()  # by own time, then by cumulative time
    assert python.count("Ordered by: internal time") == 1 and python.count("Ordered by: cumulative time") == 1
    assert re.search(r"zofo/meta/metatrain\.py:\d+\(step\)", python)  # the outer step, first by cumulative time


def test_no_cudnn_attention_takes_cudnn_out_of_the_attention_backends(tmp_path, tiny_model_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp", calls.append)  # process-wide: not for real here
    args = [str(tiny_model_dir), "--split", str(write_split(tmp_path)), "--steps", "1", "--batch-size", "2",
            "--tasks-per-step", "2", "--lower-steps", "1", "--max-length", "32", "--upper", "6", "--lower", "12",
            "--device", "cpu"]
    monkeypatch.setattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: True)
    main(args)
    assert calls == [True]  # put back as it was
    main(args + ["--no-cudnn-attention"])
    assert calls == [True, False, True]  # off for the measurement, then back
