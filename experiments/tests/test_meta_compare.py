"""experiments/meta_compare.py: backbones side by side over the held-out tasks every one finished, paired differences
against an independent computation, ties called ties, the training cost read back; as a process too."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import meta_compare

ROOT = Path(__file__).resolve().parents[2]
# backbone -> task -> k-shot LoRA accuracy per seed 0, 1 (zero-shot and ICL are these minus 0.1)
ACCURACY = {
    "base": {"a": (0.50, 0.52), "b": (0.30, 0.32), "c": (0.70, 0.70)},
    "bilevel-zofo-s0": {"a": (0.60, 0.62), "b": (0.31, 0.33), "c": (0.65, 0.71), "d": (0.9, 0.9)},
    "fo-lora-s0": {"a": (0.58, 0.60), "b": (0.40, 0.40), "c": (0.5,)},  # c has seed 0 only: left out everywhere
}


def write_study(out: Path) -> None:
    for backbone, tasks in ACCURACY.items():
        for task, by_seed in tasks.items():
            for seed, acc in enumerate(by_seed):
                below = {"accuracy": acc - 0.1}
                unit = {"task": task, "seed": seed, "zero_shot": below, "icl": below, "peft": {"accuracy": acc}}
                file = out / "test" / backbone / "units" / task / f"seed{seed}.json"
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(json.dumps(unit))
    run = out / "train" / "bilevel-zofo-s0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "method": "meta-bilevel-zofo", "steps": 90, "train_seconds_without_evaluation": 300.5,
        "work": {"forward_rows": 1000, "backward_rows": 400}, "peak_memory_mib": {"eval": 9.0, "train_step": 1234.56},
        "dev_first": 0.25, "dev_last": 0.26}))


def test_paired_differences_over_the_tasks_every_backbone_finished(tmp_path):
    write_study(tmp_path)
    report = meta_compare.compare(tmp_path, "bilevel-zofo-s0")
    assert report["tasks"] == ["a", "b"] and report["seeds"] == [0, 1]
    assert report["all_tasks"] == {"base": 3, "bilevel-zofo-s0": 4, "fo-lora-s0": 3}
    # independent: per task mean over seeds, then differences, then mean and sample s.e.
    mean = {b: {t: sum(ACCURACY[b][t]) / 2 for t in ("a", "b")} for b in ACCURACY}
    vs_base = [mean["bilevel-zofo-s0"][t] - mean["base"][t] for t in ("a", "b")]  # +0.10, +0.01
    d = report["paired"]["peft"]["base"]
    assert d["mean"] == pytest.approx(statistics.fmean(vs_base))
    assert d["se"] == pytest.approx(statistics.stdev(vs_base) / 2 ** 0.5)
    assert (d["ahead"], d["behind"], d["tie"]) == (2, 0, False)
    vs_fo = report["paired"]["peft"]["fo-lora-s0"]  # +0.02 and -0.08: mean -0.03, s.e. 0.05: a tie
    assert vs_fo["mean"] == pytest.approx(-0.03) and vs_fo["se"] == pytest.approx(0.05) and vs_fo["tie"]
    assert report["paired"]["zero_shot"]["base"]["mean"] == pytest.approx(d["mean"])
    assert report["training"]["bilevel-zofo-s0"]["peak_train_mib"] == 1234.6
    text = meta_compare.markdown(report)
    assert "vs fo-lora-s0: -3.0 ± 5.0 (tie; 1 tasks ahead, 1 behind)" in text
    assert "| **mean** |" in text and "| bilevel-zofo-s0 | meta-bilevel-zofo | 90 | 300.5 |" in text


def test_a_difference_without_spread_is_no_tie_and_needs_no_ratio():
    d = meta_compare.paired([0.6, 0.7], [0.5, 0.6])
    assert d["se"] == 0 and not d["tie"] and d["ahead"] == 2
    report = {"backbones": ["x", "y"], "tasks": ["a", "b"], "reference": "x", "seeds": [0], "all_tasks": {},
              "accuracy": {s: {"x": {"a": 0.6, "b": 0.7}, "y": {"a": 0.5, "b": 0.6}} for s in meta_compare.SETTINGS},
              "paired": {s: {"y": d} for s in meta_compare.SETTINGS}, "training": {}}
    assert "vs y: +10.0 ± 0.0 (ahead; 2 tasks ahead, 0 behind)" in meta_compare.markdown(report)


def test_as_a_process_writes_the_table_and_refuses_an_unknown_reference(tmp_path):
    write_study(tmp_path)
    done = subprocess.run([sys.executable, "-m", "experiments.meta_compare", str(tmp_path), "--results",
                           str(tmp_path / "res")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "res" / "meta_compare.json").read_text())["reference"] == "bilevel-zofo-s0"
    assert (tmp_path / "res" / "meta_compare.png").stat().st_size > 1000
    refused = subprocess.run([sys.executable, "-m", "experiments.meta_compare", str(tmp_path), "--reference", "x"],
                             cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 1 and "no meta-test of 'x'" in refused.stderr


def finished(**tasks: list[int]) -> dict[str, dict[int, dict]]:
    return {task: {seed: {} for seed in seeds} for task, seeds in tasks.items()}


def test_a_meta_test_stopped_in_its_last_seed_keeps_every_task_with_the_seeds_all_finished():
    whole = finished(a=[0, 1], b=[0, 1], c=[0, 1], d=[0, 1])
    stopped = finished(a=[0, 1], b=[0], c=[0], d=[0])  # seed-major: seed 1 reached task a only
    assert meta_compare.common_tasks({"x": whole, "y": stopped}) == (["a", "b", "c", "d"], [0])


def test_a_meta_test_stopped_inside_a_task_drops_that_task_and_keeps_every_seed():
    whole = finished(a=[0, 1, 2], b=[0, 1, 2], c=[0, 1, 2])
    stopped = finished(a=[0, 1, 2], b=[0, 1, 2], c=[0])  # task-major: stopped inside task c
    assert meta_compare.common_tasks({"x": whole, "y": stopped}) == (["a", "b"], [0, 1, 2])


def test_a_task_one_backbone_never_started_is_left_out():
    assert meta_compare.common_tasks({"x": finished(a=[0], b=[0]), "y": finished(b=[0])}) == (["b"], [0])


def test_paired_differences_are_mean_and_standard_error_over_tasks_with_ties_called():
    d = meta_compare.paired([0.5, 0.7, 0.9], [0.4, 0.5, 0.9])
    assert abs(d["mean"] - 0.1) < 1e-12 and abs(d["se"] - (0.01 / 3) ** 0.5) < 1e-12  # diffs .1 .2 0: sd .1
    assert not d["tie"] and (d["ahead"], d["behind"]) == (2, 0)
    assert meta_compare.paired([0.5, 0.5], [0.4, 0.6])["tie"]


def test_a_pooled_baselines_dev_before_and_after_come_from_its_log(tmp_path):
    run = tmp_path / "fo-lora-s0"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"method": "fo-peft", "steps": 3, "best_dev": 0.5}))
    rows = [{"step": 0, "phase": "dev", "accuracy": 0.25}, {"step": 2, "phase": "train", "loss": 1.0},
            {"step": 3, "phase": "dev", "accuracy": 0.5}, {"step": 3, "phase": "test", "accuracy": 0.4}]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cost = meta_compare.training_cost(run)
    assert (cost["dev_first"], cost["dev_last"], cost["steps"]) == (0.25, 0.5, 3)
