"""experiments/study.py and its report: grids, templates, dev-only selection, prompt spread, time-to-target."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from experiments import launch, records, study
from experiments.report import aggregate, checks, plots, selection, speedup, tables
from experiments.report import runs as run_rows
from experiments.report.runs import read_sources
from zofo.api import load_config

ROOT = Path(__file__).resolve().parents[2]


def fake_run(out: Path, task: str, method: str, seed: int, dev: list[tuple[float, float]], test: float,
             peak: float = 500.0, config: dict | None = None, train_times: list[float] | None = None,
             dev_n: int | None = None, reserved: float | None = None) -> None:
    """A finished run folder: result.json and a log with the given (seconds, dev accuracy) evaluations
    (`train_times`: their seconds without evaluations, as runs log them now; else none, as older runs)."""
    folder = out / f"{task}__{method}__s{seed}"
    folder.mkdir(parents=True)
    log = [{"phase": "train", "step": s, "loss": 1.0 / s, "step_seconds": 0.1, "time": s / 10} for s in (1, 2, 3)]
    log += [{"phase": "dev", "step": i, "time": t, "accuracy": a} | ({"n": dev_n} if dev_n else {})
            for i, (t, a) in enumerate(dev)]
    for entry, seconds in zip([e for e in log if e["phase"] == "dev"], train_times or [], strict=False):
        entry["train_time"] = seconds
    (folder / "log.jsonl").write_text("\n".join(json.dumps(e) for e in log))
    (folder / "result.json").write_text(json.dumps({
        "test": {"accuracy": test, "n": 100}, "best_dev": max(a for _, a in dev),
        "best_step": [a for _, a in dev].index(max(a for _, a in dev)), "steps": 3,
        "train_seconds": dev[-1][0], "peak_memory_mib": {"train_step": peak}, "config": config or {},
        "work": {"forward_rows": 3000 * (seed + 1), "backward_rows": 0}}
        | ({"peak_memory_reserved_mib": {"train_step": reserved}} if reserved else {})))


def test_runs_are_spread_over_the_devices_and_selected_by_name(tmp_path, monkeypatch):
    study_file = tmp_path / "s.yaml"
    study_file.write_text("tasks: [{name: cb, task: cb, data: CB}, {name: copa, task: copa, data: COPA},"
                          " {name: wic, task: wic, data: WiC}]\nmethods: [{name: mezo, set: {}}]\nseeds: [0, 1]\n")
    seen = []
    monkeypatch.setattr(study, "launch", lambda run, out, logs, device, *rest: seen.append((run["name"], device)) or {})
    study.run_study(study_file, tmp_path / "out", 4, "DATA", ["cb__", "copa__"], devices=["0", "1"])
    assert sorted(n for n, _ in seen) == ["cb__mezo__s0", "cb__mezo__s1", "copa__mezo__s0", "copa__mezo__s1"]
    assert sorted(d for _, d in seen) == ["0", "0", "1", "1"]
    assert launch.run_env("1")["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert "CUDA_VISIBLE_DEVICES" not in launch.run_env(None)


def test_runs_together_are_grouped_per_device_in_study_order():
    runs = [{"name": f"r{i}"} for i in range(5)]
    groups = launch.together_groups(runs, ["0", "1", "0", "1", "0"], 2)
    assert [([r["name"] for r in g], d) for g, d in groups] == [(["r0", "r2"], "0"), (["r4"], "0"),
                                                                (["r1", "r3"], "1")]


def test_runs_launched_together_finish_in_one_process(tmp_path, tiny_model_dir, shared_data):
    common = {"model.name": tiny_model_dir, "data.task": "sst2", "data.data": shared_data / "sst2",
              "data.n_train": 32, "data.n_dev": 8, "data.n_test": 8, "data.max_length": 48,
              "train.batch_size": 4, "train.steps": 2, "train.eval_every": 2, "optim.lr": 1e-3}
    runs = [{"name": f"sst2__{m}__s0", "overrides": {**common, "train.method": m}} for m in ("mezo", "fo-peft")]
    (tmp_path / "logs").mkdir()
    (tmp_path / runs[0]["name"]).mkdir()  # an earlier attempt, killed: set aside, not appended to
    (tmp_path / runs[0]["name"] / "log.jsonl").write_text('{"killed": 1}\n')
    statuses = launch.launch_together(runs, tmp_path, tmp_path / "logs")
    assert [s["status"] for s in statuses] == ["ok", "ok"] and statuses[0]["together"] == 2
    assert (tmp_path / f"{runs[0]['name']}.attempt1" / "log.jsonl").read_text() == '{"killed": 1}\n'
    assert "killed" not in (tmp_path / runs[0]["name"] / "log.jsonl").read_text()
    for run in runs:
        result = json.loads((tmp_path / run["name"] / "result.json").read_text())
        assert result["shared_process"] and result["steps"] == 2
        assert json.loads((tmp_path / run["name"] / "placement.json").read_text())["device"] is None
    assert launch.launch_together(runs, tmp_path, tmp_path / "logs")[0]["status"] == "done before"


def test_runs_launched_together_continue_from_their_checkpoints_and_report_a_stop(tmp_path, monkeypatch):
    runs = [{"name": f"sst2__mezo__s{seed}", "overrides": {"train.seed": seed}} for seed in (0, 1)]
    logs = tmp_path / "logs"
    logs.mkdir()
    left = tmp_path / runs[0]["name"]  # seed 0 was stopped at step 3 with these settings; seed 1 never ran
    (left / "checkpoint").mkdir(parents=True)
    (left / "checkpoint" / "loop.json").write_text('{"step": 3}')
    launch.record_placement(left, None, {}, launch.run_overrides(runs[0], tmp_path))
    jobs, stop = [], launch.StudyStop()

    def worker_stopped(self, args, log, env):  # the process got the stop: seed 1 too saves a checkpoint
        jobs.append(json.loads(Path(args[-1]).read_text()))
        (tmp_path / runs[1]["name"] / "checkpoint").mkdir(parents=True)
        (tmp_path / runs[1]["name"] / "checkpoint" / "loop.json").write_text('{"step": 1}')
        self.requested = True
        return 1

    monkeypatch.setattr(launch.StudyStop, "run", worker_stopped)
    statuses = launch.launch_together(runs, tmp_path, logs, stop=stop)
    assert [job["overrides"].get("train.resume") for job in jobs[0]] == [str(left / "checkpoint"), None]
    assert not (tmp_path / f"{runs[0]['name']}.attempt1").exists()  # continued, not set aside
    assert [s["status"] for s in statuses] == [
        "stopped (exit 1): checkpoint at step 3, run the study again to continue",
        "stopped (exit 1): checkpoint at step 1, run the study again to continue"]


def test_grids_and_templates_expand_into_named_runs():
    spec = {"tasks": [{"name": "rte", "task": "rte", "data": "RTE", "templates": ["mezo", "gpt3"]}],
            "methods": [{"name": "mezo", "set": {"train.method": "mezo"},
                         "grid": {"optim.lr": [1e-5, 3e-5], "optim.lr_upper,optim.lr_lower": [1e-3]}}],
            "seeds": [0, 1]}
    runs = study.expand(spec, "DATA")
    assert len(runs) == 2 * 2 * 2
    names = {r["name"] for r in runs}
    assert "rte@gpt3__mezo@lr1e-05-lr_upper0.001__s1" in names
    run = next(r for r in runs if r["name"] == "rte@gpt3__mezo@lr3e-05-lr_upper0.001__s0")
    assert run["overrides"]["optim.lr"] == 3e-5 and run["overrides"]["data.template"] == "gpt3"
    assert run["overrides"]["optim.lr_upper"] == run["overrides"]["optim.lr_lower"] == 1e-3  # one key, two settings
    assert run["overrides"]["data.data"] == str(Path("DATA") / "RTE") and run["overrides"]["train.seed"] == 0


def test_data_splits_cross_the_seeds_and_name_each_run_by_split_and_seed():
    spec = {"tasks": [{"name": "cb", "task": "cb", "data": "CB"}], "splits": [0, 2], "seeds": [0, 1],
            "methods": [{"name": "fo-lora", "set": {"train.method": "fo-peft"}},
                        {"name": "icl", "set": {"train.method": "icl"}, "trains": False}]}
    runs = {r["name"]: r for r in study.expand(spec, "DATA")}
    assert sorted(runs) == ["cb__fo-lora__s0", "cb__fo-lora__s1", "cb__fo-lora__s20", "cb__fo-lora__s21",
                            "cb__icl__s0", "cb__icl__s20"]
    assert {k: runs["cb__fo-lora__s21"]["overrides"][k] for k in ("data.seed", "train.seed")} == {"data.seed": 2,
                                                                                                   "train.seed": 1}
    assert runs["cb__fo-lora__s21"]["seed"] == 21 and "data.seed" not in study.expand(
        {**spec, "splits": None}, "DATA")[0]["overrides"]
    with pytest.raises(SystemExit, match="seeds 0-9"):
        study.expand({**spec, "seeds": [10]}, "DATA")


def test_aggregate_selects_on_dev_and_times_the_reference(tmp_path):
    runs = tmp_path / "runs"
    # the lr with the better dev accuracy has the worse test accuracy: selection must follow dev
    fake_run(runs, "sst2", "mezo@lr1e-05", 0, [(0, 0.5), (100, 0.60), (200, 0.70)], test=0.60)
    fake_run(runs, "sst2", "mezo@lr3e-05", 0, [(0, 0.5), (100, 0.65), (200, 0.68)], test=0.75)
    fake_run(runs, "sst2", "mezo", 0, [(0, 0.5), (100, 0.66), (200, 0.69), (300, 0.69)], test=0.70, peak=600)
    fake_run(runs, "sst2", "bilevel", 0, [(0, 0.5), (50, 0.72), (400, 0.80)], test=0.80, peak=900)
    fake_run(runs, "sst2", "zo-lora", 0, [(0, 0.5), (300, 0.60)], test=0.60, peak=400)
    aggregate.aggregate(runs, tmp_path / "res", ["mezo", "bilevel", "zo-lora"])
    selected = (tmp_path / "res" / "selected.md").read_text()
    assert "| sst2 | mezo | mezo@lr1e-05 | 3 | 0.700 | 0.600 ± 0.000 | 1 |" in selected
    found = {f["method"]: f for f in json.loads((tmp_path / "res" / "speedup.json").read_text())}
    # the reference "mezo" is a grid family here: its dev-selected point, lr 1e-5 (final dev 0.70 at 200 s)
    assert found["mezo"]["point"] == found["mezo"]["reference_point"] == "mezo@lr1e-05"
    assert found["mezo"]["reference_seconds"] == 200 and found["mezo"]["target"] == 0.70
    assert found["bilevel"]["seconds"] == 50 and found["bilevel"]["speedup"] == 4.0
    assert found["zo-lora"]["seconds"] is None and "not reached" in (tmp_path / "res" / "speedup.md").read_text()
    assert (tmp_path / "res" / "pareto.png").stat().st_size > 5_000
    assert "| 3.0 / 0.0 |" in (tmp_path / "res" / "table.md").read_text()  # sequences forward / backward
    assert "| sst2 | bilevel | 4.0x | 4.0x | 0 / 0 |" in (tmp_path / "res" / "speedup.md").read_text()
    best = (tmp_path / "res" / "speedup_best.md").read_text()  # mezo's best is its final value here
    assert best.startswith("Secondary view") and "| sst2 | bilevel | 4.0x | 4.0x | 0 / 0 |" in best


def test_no_speedup_against_a_reference_that_learned_nothing(tmp_path):
    """A reference whose final dev accuracy is no higher than its first one is reached by everything at once:
    no speed-up is reported for that seed, and the summary counts it."""
    runs = tmp_path / "runs"
    fake_run(runs, "rte", "mezo", 0, [(1, 0.50), (100, 0.55), (200, 0.49)], test=0.5)
    fake_run(runs, "rte", "bilevel", 0, [(2, 0.50), (50, 0.60)], test=0.6)
    fake_run(runs, "rte", "mezo", 1, [(1, 0.50), (100, 0.52), (200, 0.54)], test=0.5, dev_n=50)
    fake_run(runs, "rte", "bilevel", 1, [(2, 0.50), (50, 0.60)], test=0.6)
    fake_run(runs, "rte", "mezo", 2, [(1, 0.50), (100, 0.45), (200, 0.50)], test=0.5)
    fake_run(runs, "rte", "bilevel", 2, [(2, 0.50), (50, 0.60)], test=0.6)
    found = speedup.speedups(run_rows.load_runs(runs), "mezo", ["mezo", "bilevel"])
    flat = next(f for f in found if f["seed"] == 0 and f["method"] == "bilevel")
    assert flat["reference_improved"] is False and flat["speedup"] is None and flat["seconds"] == 2
    real = next(f for f in found if f["seed"] == 1 and f["method"] == "bilevel")
    assert real["speedup"] == 4.0
    table = speedup.speedup_table(found, "mezo")
    rows = {(line.split(" | ")[1], line.split(" | ")[3]): line for line in table.splitlines() if "| rte | " in line}
    # the label says the rule applied (final not above first), and whether mezo rose in between
    rose = "mezo's final dev not above its first evaluation, 0.500: it rose to 0.550 and fell back"
    assert rose in rows["0", "bilevel"]
    assert "| rte | 1 | 0.540 (+2 of 50) | bilevel |" in rows["1", "bilevel"]  # 0.50 -> 0.54 of 50 examples
    assert "| rte | 0 | 0.490 | bilevel |" in rows["0", "bilevel"]  # no gain to count
    # the secondary view, to mezo's best dev accuracy: defined where mezo rose at all, even if it fell back
    best = {f["seed"]: f for f in speedup.speedups(run_rows.load_runs(runs), "mezo", ["bilevel"], "best")}
    assert (best[0]["target"], best[0]["reference_seconds"], best[0]["seconds"]) == (0.55, 100, 50)
    assert best[0]["speedup"] == 2.0 and best[1]["speedup"] == 4.0  # seed 1's best is its final value
    assert best[2]["speedup"] is None  # mezo never rose above its first evaluation
    assert "mezo's best dev not above its first evaluation: never above it" in speedup.speedup_table(
        list(best.values()), "mezo")
    assert "mezo's final dev not above its first evaluation: never above it" in rows["2", "bilevel"]
    assert "never rose" not in table and "rose to" not in rows["2", "bilevel"]
    assert "| rte | bilevel | 4.0x | 4.0x | 2 / 0 |" in table


def test_prompt_spread_over_templates(tmp_path):
    runs = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.70, 0.60), (0.74, 0.58)]):
        fake_run(runs, "rte@mezo", "mezo", seed, [(0, 0.5), (10, 0.6)], test=a)
        fake_run(runs, "rte@gpt3", "mezo", seed, [(0, 0.5), (10, 0.6)], test=b)
    aggregate.aggregate(runs, tmp_path / "res", ["mezo"])
    spread = (tmp_path / "res" / "prompts.md").read_text()
    assert "| mezo | rte | 0, 1 | gpt3 0.590, mezo 0.720 | 0.130 |" in spread
    assert "| mezo | 1 | 0.130 | 0.130 |" in spread


def test_prompt_spread_compares_templates_on_the_seeds_they_share(tmp_path):
    """A default template run on three seeds against another run on seed 0 only: compared on seed 0."""
    runs = tmp_path / "runs"
    for seed, test in enumerate([0.70, 0.90, 0.95]):
        fake_run(runs, "cb@mezo", "mezo", seed, [(0, 0.5), (10, 0.6)], test=test)
    fake_run(runs, "cb@gpt3", "mezo", 0, [(0, 0.5), (10, 0.6)], test=0.60)
    fake_run(runs, "rte@mezo", "mezo", 1, [(0, 0.5), (10, 0.6)], test=0.60)
    fake_run(runs, "rte@gpt3", "mezo", 0, [(0, 0.5), (10, 0.6)], test=0.60)  # no seed in common
    aggregate.aggregate(runs, tmp_path / "res", ["mezo"])
    spread = (tmp_path / "res" / "prompts.md").read_text()
    assert "| mezo | cb | 0 | gpt3 0.600, mezo 0.700 | 0.100 |" in spread
    assert "| rte |" not in spread and "| mezo | 1 | 0.100 | 0.100 |" in spread


def test_runs_without_templates_count_under_their_task_default_template(tmp_path):
    """A study of the other templates alone, pooled with a study that ran each task's default template."""
    core, other = tmp_path / "core", tmp_path / "other"
    for seed in (0, 1):
        fake_run(core, "cb", "mezo", seed, [(0, 0.5), (10, 0.6)], test=0.70,
                 config={"data": {"task": "cb", "template": None}})
        fake_run(core, "rte", "mezo", seed, [(0, 0.5), (10, 0.6)], test=0.55,
                 config={"data": {"task": "rte", "template": None}})
        fake_run(other, "cb@gpt3", "mezo", seed, [(0, 0.5), (10, 0.6)], test=0.60 + 0.02 * seed,
                 config={"data": {"task": "cb", "template": "gpt3"}})
    aggregate.aggregate([core, other], tmp_path / "res", ["mezo"])
    spread = (tmp_path / "res" / "prompts.md").read_text()
    assert "| mezo | cb | 0, 1 | gpt3 0.610, mezo 0.700 | 0.090 |" in spread
    assert "| rte |" not in spread  # one template only: no spread


def test_default_template_is_the_first_of_the_task():
    from zofo.tasks import default_template

    assert default_template("cb") == "mezo" and default_template("bigbench:winowhy") == "bigbench"
    with pytest.raises(Exception, match="unknown task"):
        default_template("no-such-task")


def test_studies_of_several_folders_pool_and_refuse_a_run_found_twice(tmp_path):
    fake_run(tmp_path / "a", "sst2", "mezo", 0, [(1, 0.5), (100, 0.6)], test=0.6)
    fake_run(tmp_path / "b", "sst2", "mezo", 1, [(1, 0.5), (100, 0.7)], test=0.7)
    aggregate.aggregate([tmp_path / "a", tmp_path / "b"], tmp_path / "res", ["mezo"])
    assert "0.650 ± 0.050" in (tmp_path / "res" / "table.md").read_text()  # population std, as numpy's
    assert (tmp_path / "res" / "sst2__mezo__s1.json").exists()
    fake_run(tmp_path / "c", "sst2", "mezo", 1, [(1, 0.5), (100, 0.8)], test=0.8)
    with pytest.raises(ValueError, match="sst2__mezo__s1 is in both"):
        run_rows.load_runs(tmp_path / "b", tmp_path / "c")


def test_a_rerun_in_a_later_folder_replaces_the_earlier_run_only_when_asked(tmp_path, capsys):
    fake_run(tmp_path / "a", "sst2", "mezo", 0, [(1, 0.5), (100, 0.6)], test=0.6)
    fake_run(tmp_path / "a", "sst2", "mezo", 1, [(1, 0.5), (100, 0.7)], test=0.7)
    fake_run(tmp_path / "b", "sst2", "mezo", 1, [(1, 0.5), (100, 0.8)], test=0.8)
    rows = run_rows.load_runs(tmp_path / "a", tmp_path / "b", reruns=True)
    assert sorted((r["seed"], r["result"]["test"]["accuracy"]) for r in rows) == [(0, 0.6), (1, 0.8)]
    printed = capsys.readouterr().out
    assert f"sst2__mezo__s1: the run in {tmp_path / 'b'} replaces the one in {tmp_path / 'a'}\n" in printed
    rows = run_rows.load_runs(tmp_path / "b", tmp_path / "a", reruns=True)  # the order of the folders decides
    assert sorted(r["result"]["test"]["accuracy"] for r in rows) == [0.6, 0.7]


def grid_study(runs: Path) -> None:
    """Three tasks: a plain zo-lora only (boolq), a two-point grid with a clear dev winner (cb), a dev tie (copa)."""
    fake_run(runs, "boolq", "zo-lora", 0, [(0, 0.5), (100, 0.62)], test=0.58)
    fake_run(runs, "cb", "zo-lora@lr0.0001", 0, [(0, 0.5), (100, 0.60)], test=0.70)
    fake_run(runs, "cb", "zo-lora@lr0.0003", 0, [(0, 0.5), (30, 0.80)], test=0.50, peak=700)
    # a tie on dev: the smaller learning rate wins, though "lr0.0001" sorts before "lr1e-05" as text
    fake_run(runs, "copa", "zo-lora@lr0.0001", 0, [(0, 0.5), (100, 0.60)], test=0.40)
    fake_run(runs, "copa", "zo-lora@lr1e-05", 0, [(0, 0.5), (100, 0.60)], test=0.64)
    for task in ("boolq", "cb", "copa"):
        fake_run(runs, task, "mezo", 0, [(0, 0.5), (60, 0.55), (120, 0.55)], test=0.55)


def test_a_dev_tie_goes_to_the_starting_point_before_a_smaller_learning_rate(tmp_path):
    fake_run(tmp_path, "wic", "zo-lora", 0, [(0, 0.5), (100, 0.60)], test=0.61)
    fake_run(tmp_path, "wic", "zo-lora@lr1e-06", 0, [(0, 0.5), (100, 0.60)], test=0.51)
    fake_run(tmp_path, "wic", "zo-lora@lr0.001", 0, [(0, 0.5), (100, 0.60)], test=0.41)
    chosen = selection.selection(run_rows.load_runs(tmp_path))[("wic", "zo-lora")]
    assert chosen["point"] == "zo-lora" and chosen["tied"] == ["zo-lora", "zo-lora@lr1e-06", "zo-lora@lr0.001"]


def grid_check_lines(out: Path, check, families: list[str]) -> list[str]:
    """What ``check`` (one of `checks.GRID_CHECKS`) lists for the fake runs in ``out``; its first line must
    also be in the aggregate's selected.md."""
    rows = run_rows.load_runs(out)
    lines = check(rows, selection.selection(rows), families)
    aggregate.aggregate(out, out / "res", ["fo"])
    assert lines and lines[0] in (out / "res" / "selected.md").read_text()
    return lines


def test_grid_edges_name_the_choices_the_grid_does_not_bracket(tmp_path):
    """An axis through a choice: one grid key changed, or tied keys changed by one ratio (lr_upper = lr_lower). A
    choice with neighbours on one side of an axis only is at an edge; a point off every axis says nothing."""
    def point(task, name, dev, **optim):
        fake_run(tmp_path, task, name, 0, [(0, 0.5), (100, dev)], test=0.5, config={"optim": optim})

    point("cb", "fo", 0.60, lr=1e-5)                    # the starting point: its value is in its config only
    point("cb", "fo@lr3e-06", 0.55, lr=3e-6)
    point("cb", "fo@lr3e-05", 0.70, lr=3e-5)            # chosen, the largest lr: an edge
    point("rte", "fo", 0.60, lr=1e-5)
    point("rte", "fo@lr3e-06", 0.65, lr=3e-6)           # chosen, the smallest
    point("rte", "fo@lr3e-05", 0.55, lr=3e-5)
    point("wic", "fo", 0.70, lr=1e-5)                   # chosen, inside
    point("wic", "fo@lr3e-06", 0.55, lr=3e-6)
    point("wic", "fo@lr3e-05", 0.55, lr=3e-5)
    point("wsc", "fo", 0.55, lr=1e-5)
    point("wsc", "fo@lr3e-06", 0.60, lr=3e-6)           # chosen by the tie rule (the smaller lr): an edge by a tie
    point("wsc", "fo@lr3e-05", 0.60, lr=3e-5)
    for task, devs in [("copa", (0.60, 0.55, 0.72, 0.65)), ("sst2", (0.70, 0.60, 0.60, 0.65))]:
        point(task, "bi", devs[0], lr_upper=1e-4, lr_lower=1e-4)
        point(task, "bi@lr_upper3e-05", devs[1], lr_upper=3e-5, lr_lower=3e-5)  # the tied diagonal
        point(task, "bi@lr_upper0.0003", devs[2], lr_upper=3e-4, lr_lower=3e-4)
        point(task, "bi@lr_lower0.001", devs[3], lr_upper=1e-4, lr_lower=1e-3)  # off the diagonal's top point
    assert grid_check_lines(tmp_path, checks.grid_edges, ["fo", "bi"]) == [
        "- cb fo: fo@lr3e-05 has the largest lr of its grid, 3e-05 (the others along it: 3e-06, 1e-05)",
        "- copa bi: bi@lr_upper0.0003 has the largest lr_upper=lr_lower of its grid, 0.0003 (the others along it: "
        "3e-05, 0.0001)",
        "- rte fo: fo@lr3e-06 has the smallest lr of its grid, 3e-06 (the others along it: 1e-05, 3e-05)",
        "- sst2 bi: bi has the smallest lr_lower of its grid, 0.0001 (the others along it: 0.001)",
        "- wsc fo: fo@lr3e-06 has the smallest lr of its grid, 3e-06 (the others along it: 1e-05, 3e-05); it ties on "
        "dev with fo@lr3e-05 along it, so the tie rule, not dev, puts it at the edge"]


def test_seeds_that_trained_unequally_far_are_listed(tmp_path):
    """Each run logged 3 steps; seed 2's budget was 6, so it reached half of it where seeds 0 and 1 reached all."""
    for seed, budget, test in [(0, 3, 0.6), (1, 3, 0.7), (2, 6, 0.5)]:
        fake_run(tmp_path, "cb", "fo@lr1e-05", seed, [(0, 0.5), (100, 0.8)], test=test,
                 config={"optim": {"lr": 1e-5}, "train": {"steps": budget}})
        fake_run(tmp_path, "cb", "fo@lr3e-05", seed, [(0, 0.5), (100, 0.7)], test=0.5,
                 config={"optim": {"lr": 3e-5}, "train": {"steps": 6}})  # all at half: even, not listed
    assert grid_check_lines(tmp_path, checks.seeds_unequal, ["fo"]) == [
        "- cb fo@lr1e-05: seed 0 100% (test 0.600), seed 1 100% (test 0.700), seed 2 50% (test 0.500)"]


def test_chosen_points_with_fewer_seeds_are_listed_with_the_runs_that_complete_them(tmp_path):
    """fo's choice on cb has seeds 0-2, on rte (a point that moved) seed 0 only; zo was only ever run on seed 0."""
    for seed in (0, 1, 2):
        fake_run(tmp_path, "cb", "fo@lr1e-05", seed, [(0, 0.5), (100, 0.8)], test=0.6)
        fake_run(tmp_path, "rte", "fo@lr1e-05", seed, [(0, 0.5), (100, 0.6)], test=0.6)
    fake_run(tmp_path, "cb", "fo@lr3e-05", 0, [(0, 0.5), (100, 0.7)], test=0.5)
    fake_run(tmp_path, "rte", "fo@lr3e-06", 0, [(0, 0.5), (100, 0.7)], test=0.5)  # chosen on seed 0's dev
    fake_run(tmp_path, "wic", "fo@lr3e-06", 1, [(0, 0.5), (100, 0.7)], test=0.5)  # seed 1 only
    for task in ("cb", "rte"):
        fake_run(tmp_path, task, "zo@lr1e-05", 0, [(0, 0.5), (100, 0.7)], test=0.5)
        fake_run(tmp_path, task, "zo@lr3e-05", 0, [(0, 0.5), (100, 0.6)], test=0.5)
    assert grid_check_lines(tmp_path, checks.seeds_missing, ["fo", "zo"]) == [
        "- rte fo@lr3e-06: seed 0; to run: rte__fo@lr3e-06__s1 rte__fo@lr3e-06__s2",
        "- wic fo@lr3e-06: seed 1; to run: wic__fo@lr3e-06__s0 wic__fo@lr3e-06__s2",
        "- all of them: `--only rte__fo@lr3e-06__s1 rte__fo@lr3e-06__s2 wic__fo@lr3e-06__s0 "
        "wic__fo@lr3e-06__s2`"]


def test_chosen_points_that_deploy_the_untrained_start_are_listed(tmp_path):
    """A run whose best dev is its first evaluation (step 0, before training) deploys the model it started from."""
    fake_run(tmp_path, "wsc", "fo@lr1e-05", 0, [(0, 0.6), (100, 0.6)], test=0.55)  # a later tie: step 0 stays best
    fake_run(tmp_path, "wsc", "fo@lr1e-05", 1, [(0, 0.5), (100, 0.7)], test=0.65)
    fake_run(tmp_path, "wsc", "fo@lr1e-05", 2, [(0, 0.7), (100, 0.6)], test=0.52)
    fake_run(tmp_path, "wsc", "fo@lr3e-05", 0, [(0, 0.6), (100, 0.5)], test=0.55)  # not chosen: not listed
    fake_run(tmp_path, "cb", "fo@lr1e-05", 0, [(0, 0.5), (100, 0.8)], test=0.6)    # trained: not listed
    fake_run(tmp_path, "cb", "fo@lr3e-05", 0, [(0, 0.5), (100, 0.7)], test=0.6)
    assert grid_check_lines(tmp_path, checks.untrained_choices, ["fo"]) == [
        "- wsc fo@lr1e-05: seeds 0, 2 of 3 (test 0.550, 0.520)"]


def test_grid_axis_of_names_or_of_one_point_is_none():
    assert selection.grid_axis({"direction": "gaussian"}, {"direction": "rademacher"}) is None
    assert selection.grid_axis({"lr": 1e-4}, {"lr": 1e-4}) is None
    assert selection.grid_axis({"lr": 1e-4, "lam": 1e4}, {"lr": 3e-4, "lam": 1e2}) is None  # ratios 3 and 1/100
    assert selection.grid_axis({"a": 1e-4, "b": 1e-4}, {"a": 3e-5, "b": 3e-5}) == (("a", "b"), -1)


def test_table_shows_a_grid_method_as_one_row_of_its_dev_selected_points(tmp_path):
    grid_study(tmp_path / "runs")
    aggregate.aggregate(tmp_path / "runs", tmp_path / "res", ["mezo"])
    table = (tmp_path / "res" / "table.md").read_text()
    accuracy = table.split("\n\n")[0]
    assert "| zo-lora | 0.580 | 0.500 | 0.640 | 0.573 |" in accuracy  # lr 3e-4 on cb, lr 1e-5 on copa, plain on boolq
    assert "zo-lora@" not in accuracy and "| mezo | 0.550 | 0.550 | 0.550 | 0.550 |" in accuracy
    assert "cb zo-lora@lr0.0003 (of 2); copa zo-lora@lr1e-05 (of 2, tie on dev)" in table
    assert "Only one point run, nothing chosen: zo-lora on boolq." in table
    assert "goes to the study's starting point (the name without a grid suffix), then to the smaller grid" in table
    assert "| zo-lora@lr0.0003 | 30.0 | 700 |" in table  # time and memory stay per grid point
    selected = (tmp_path / "res" / "selected.md").read_text()
    assert "| boolq | zo-lora | - (only one point run: zo-lora) | 1 | 0.620 |" in selected
    assert "| cb | zo-lora | zo-lora@lr0.0003 | 2 | 0.800 | 0.500 ± 0.000 | 1 |" in selected
    assert "| copa | zo-lora | zo-lora@lr1e-05 (tie with zo-lora@lr0.0001) | 2 | 0.600 |" in selected
    assert "| mezo |" not in selected  # no grid: nothing to select
    # every point's test accuracy is kept
    assert "| zo-lora@lr0.0001 | - | 0.700 | 0.400 | - |" in selected
    assert "| zo-lora@lr0.0003 | - | 0.500 | - | - |" in selected


def test_a_curve_base_name_stands_for_the_dev_selected_point_per_task(tmp_path):
    grid_study(tmp_path / "runs")
    rows = run_rows.load_runs(tmp_path / "runs")
    drawn = {(row["task"], name): row["method"] for name, row in selection.curve_rows(rows, ["zo-lora"])}
    assert drawn == {("boolq", "zo-lora"): "zo-lora", ("cb", "zo-lora"): "zo-lora@lr0.0003",
                     ("copa", "zo-lora"): "zo-lora@lr1e-05"}
    named = selection.curve_rows(rows, ["zo-lora@lr0.0001"])  # a point named in full is itself, in every task
    assert sorted((r["task"], n) for n, r in named) == [("cb", "zo-lora@lr0.0001"), ("copa", "zo-lora@lr0.0001")]
    aggregate.aggregate(tmp_path / "runs", tmp_path / "res", ["mezo", "zo-lora"])
    found = {(f["task"], f["method"]): f for f in json.loads((tmp_path / "res" / "speedup.json").read_text())}
    cb = found["cb", "zo-lora"]
    assert cb["point"] == "zo-lora@lr0.0003" and cb["seconds"] == 30 and cb["speedup"] == 2.0
    speedup = (tmp_path / "res" / "speedup.md").read_text()
    assert "| cb | zo-lora (zo-lora@lr0.0003) | 2.0x | 2.0x | 0 / 0 |" in speedup
    assert "| boolq | zo-lora | 0.6x | 0.6x | 0 / 0 |" in speedup  # the plain run: a one-point grid
    assert (tmp_path / "res" / "pareto.png").stat().st_size > 5_000


def test_each_run_folder_records_the_device_it_was_given(tmp_path, monkeypatch):
    envs = []
    monkeypatch.setattr(launch.StudyStop, "run", lambda self, args, log, env: envs.append(env) or 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (tmp_path / "logs").mkdir()
    for name, device in (("cb__mezo__s0", "1"), ("cb__mezo__s1", None)):
        status = launch.launch({"name": name, "overrides": {}}, tmp_path / "out", tmp_path / "logs", device)
        assert status["status"] == "ok"
    placed = json.loads((tmp_path / "out" / "cb__mezo__s0" / "placement.json").read_text())
    assert placed.pop("started") <= placed.pop("ended")
    assert placed.pop("overrides")["train.output_dir"] == str(tmp_path / "out" / "cb__mezo__s0")
    assert placed == {"device": "1", "cuda_visible_devices": "1"} and envs[0]["CUDA_VISIBLE_DEVICES"] == "1"
    unplaced = json.loads((tmp_path / "out" / "cb__mezo__s1" / "placement.json").read_text())
    assert unplaced["device"] is None and unplaced["cuda_visible_devices"] is None


def test_gpu_sharing_is_the_time_weighted_count_of_runs_on_the_same_device(tmp_path):
    """Closed form: a runs 0-100 s; b 50-150 s beside it (half of a's time); c 0-100 s on another GPU; d, in
    another study folder, 0-10 s beside a; e without an end (still running, or older): left out."""
    spans = {"a": ("0", 0, 100), "b": ("0", 50, 150), "c": ("1", 0, 100), "d": ("0", 0, 10), "e": ("0", 0, None)}
    for name, (device, start, end) in spans.items():
        folder = tmp_path / ("other" if name == "d" else "study") / f"cb__{name}__s0"
        folder.mkdir(parents=True)
        placement = {"device": device, "started": 1e9 + start} | ({"ended": 1e9 + end} if end is not None else {})
        (folder / "placement.json").write_text(json.dumps(placement))
    sharing = aggregate.gpu_sharing(read_sources(tmp_path / "study", tmp_path / "other"))
    assert sharing == pytest.approx({"cb__a__s0": 1 + 0.5 + 0.1, "cb__b__s0": 1.5, "cb__c__s0": 1.0,
                                     "cb__d__s0": 2.0})


def test_paired_comparison_by_task_and_seed(tmp_path):
    """Differences and memory ratios on the pairs both methods ran; a grid family at its dev-selected point."""
    runs = tmp_path / "runs"
    for seed, (mine, theirs) in enumerate([(0.80, 0.70), (0.60, 0.70), (0.75, 0.75)]):
        fake_run(runs, "cb", "bilevel", seed, [(0, 0.5), (10, 0.6)], test=mine, peak=1100.0 + seed)
        fake_run(runs, "cb", "fo", seed, [(0, 0.5), (10, 0.6)], test=theirs, peak=1000.0)
    fake_run(runs, "rte", "bilevel", 0, [(0, 0.5), (10, 0.6)], test=0.50, peak=900.0)
    fake_run(runs, "rte", "fo", 1, [(0, 0.5), (10, 0.6)], test=0.40)       # no seed in common with bilevel
    fake_run(runs, "rte", "zo@lr0.1", 0, [(0, 0.5), (10, 0.9)], test=0.30)  # selected on dev
    fake_run(runs, "rte", "zo@lr0.2", 0, [(0, 0.5), (10, 0.7)], test=0.90)
    aggregate.aggregate(runs, tmp_path / "res", ["bilevel"], paired="bilevel")
    paired = (tmp_path / "res" / "paired.md").read_text()
    diffs = [0.10, -0.10, 0.0]
    se = statistics.stdev(diffs) / 3 ** 0.5
    summary = f"| fo | 3 (1) | {statistics.mean(diffs):+.4f} ± {se:.4f} | 1 / 1 / 1 | 0 / 1 / 0 |"
    assert summary + " 1.100 / 1.101 / 1.102 | 2 |" in paired
    assert "| fo | cb | 0, 1, 2 | +0.100, -0.100, +0.000 | 1.100, 1.101, 1.102 |" in paired
    assert "| zo | 1 (1) | +0.2000 ± 0.0000 | 1 / 0 / 0 | 1 / 0 / 0 | 1.800 / 1.800 / 1.800 | 1 |" in paired
    assert "| fo | rte |" not in paired


def test_speedups_use_training_seconds_where_every_run_of_the_group_logged_them(tmp_path):
    """Evaluations left out of the clock where all runs of a task and seed have train_time; wall-clock else."""
    runs = tmp_path / "runs"
    fake_run(runs, "rte", "mezo", 0, [(10, 0.5), (100, 0.6)], test=0.5, train_times=[5, 50])
    fake_run(runs, "rte", "bilevel", 0, [(10, 0.5), (40, 0.6)], test=0.6, train_times=[2, 10])
    fake_run(runs, "rte", "mezo", 1, [(10, 0.5), (100, 0.6)], test=0.5, train_times=[5, 50])
    fake_run(runs, "rte", "bilevel", 1, [(10, 0.5), (40, 0.6)], test=0.6)  # an older run: no train_time
    found = speedup.speedups(run_rows.load_runs(runs), "mezo", ["mezo", "bilevel"])
    by_seed = {f["seed"]: f for f in found if f["method"] == "bilevel"}
    assert (by_seed[0]["clock"], by_seed[0]["speedup"]) == ("train_time", 5.0)
    assert (by_seed[1]["clock"], by_seed[1]["speedup"]) == ("time", 2.5)
    assert speedup.speedup_table(found, "mezo").startswith(
        "Seconds are training seconds (evaluations left out) for 1 of the 2 task-seed groups; wall-clock "
        "seconds for 1 of the 2 task-seed groups.")


@pytest.mark.parametrize("study_file", sorted((Path(__file__).parents[1] / "studies").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_study_file_expands_into_valid_run_configs(study_file):
    """A mistyped key or value in a study file fails here, not on the GPU machine."""
    runs = study.expand(yaml.safe_load(study_file.read_text()), "DATA")
    assert runs and len({r["name"] for r in runs}) == len(runs)
    for run in runs:
        load_config(None, [f"{k}={v}" for k, v in launch.run_overrides(run, Path("out")).items()])


def test_grid_points_can_be_chosen_on_some_seeds_only(tmp_path):
    """A grid run on seed 0 beside a first choice run on seeds 0-2: compared on seed 0 alone when asked, as the
    other points have no seeds 1-2 to average over."""
    runs = tmp_path / "runs"
    for seed, dev in [(0, 0.60), (1, 0.90), (2, 0.90)]:
        fake_run(runs, "cb", "mezo", seed, [(0, 0.5), (10, dev)], test=0.5)
    fake_run(runs, "cb", "mezo@lr3e-05", 0, [(0, 0.5), (10, 0.70)], test=0.6)
    aggregate.aggregate(runs, tmp_path / "all", ["mezo"])
    aggregate.aggregate(runs, tmp_path / "seed0", ["mezo"], select_seeds=[0])
    assert "| cb | mezo | mezo | 2 | 0.800 |" in (tmp_path / "all" / "selected.md").read_text()
    on_seed0 = (tmp_path / "seed0" / "selected.md").read_text()
    assert "| cb | mezo | mezo@lr3e-05 | 2 | 0.700 | 0.600 ± 0.000 | 1 |" in on_seed0
    assert "best mean dev accuracy over seeds 0 (" in on_seed0


def test_table_names_the_runs_a_time_cap_stopped_before_their_step_budget(tmp_path):
    """fake runs take 3 steps: a budget of 3 is reached, a budget of 10 was cut short, no budget says nothing."""
    runs = tmp_path / "runs"
    fake_run(runs, "cb", "mezo", 0, [(0, 0.5), (9, 0.6)], 0.6, config={"train": {"steps": 3}})
    fake_run(runs, "cb", "mezo", 1, [(0, 0.5), (9, 0.6)], 0.6, config={"train": {"steps": 10}})
    fake_run(runs, "cb", "mezo", 2, [(0, 0.5), (9, 0.6)], 0.6)
    aggregate.aggregate(runs, tmp_path / "results", ["mezo"])
    table = (tmp_path / "results" / "table.md").read_text()
    assert "Stopped by a time cap before their step budget (1 of 3 runs): cb__mezo__s1 (3 of 10)." in table


def test_speedup_on_work_counts_sequences_not_seconds(tmp_path):
    """Closed form. MeZO: 3000 sequences over its 3 steps (1 thousand a step), final dev 0.70 first reached at
    step 2: work 2.0. Bilevel: 300 forward + 300 backward rows over 3 steps (0.2 thousand a step), 0.70 at step 1:
    work 0.2, so 10x on work; on seconds it needed as long as MeZO (100 s against 100 s: 1x)."""
    runs = tmp_path / "runs"
    fake_run(runs, "sst2", "mezo", 0, [(0, 0.5), (50, 0.6), (100, 0.7)], test=0.7)
    fake_run(runs, "sst2", "bilevel", 0, [(0, 0.5), (100, 0.7), (200, 0.8)], test=0.8)
    result_file = runs / "sst2__bilevel__s0" / "result.json"
    result = json.loads(result_file.read_text())
    result_file.write_text(json.dumps({**result, "work": {"forward_rows": 300, "backward_rows": 300}}))
    rows = run_rows.load_runs(runs)
    assert [e["work"] for e in run_rows.dev_entries(rows[0])] == pytest.approx([0.0, 0.2, 0.4])  # bilevel
    on_work = {f["method"]: f for f in speedup.speedups(rows, "mezo", ["bilevel"], clock=run_rows.WORK)}
    on_time = {f["method"]: f for f in speedup.speedups(rows, "mezo", ["bilevel"])}
    assert on_work["bilevel"]["speedup"] == pytest.approx(10.0) and on_time["bilevel"]["speedup"] == 1.0
    aggregate.aggregate(runs, tmp_path / "res", ["mezo", "bilevel"])
    table = (tmp_path / "res" / "speedup_work.md").read_text()
    assert table.startswith("The speed-up on training work") and "| sst2 | bilevel | 10.0x | 10.0x | 0 / 0 |" in table
    # a group with a run from before work was recorded has no work reading, and no row on it
    del result["work"]
    result_file.write_text(json.dumps(result))
    assert speedup.speedups(run_rows.load_runs(runs), "mezo", ["bilevel"], clock=run_rows.WORK) == []


def scripted_run(tmp_path: Path, monkeypatch, script: str) -> None:
    """Make every launched run execute ``script`` (python; RUN_DIR is its folder) instead of `zofo train`."""
    monkeypatch.setattr(launch, "train_command", lambda run, out: [
        sys.executable, "-c", f"import pathlib, sys, time; RUN_DIR = pathlib.Path({str(out / run['name'])!r})\n"
        + script])


OOM_ONCE = """
(RUN_DIR / "log.jsonl").open("a").write('{"attempt": 1}\\n')
tried = RUN_DIR.parent / (RUN_DIR.name + ".attempt1")
if RUN_DIR.name.startswith("big") and not tried.exists():
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 28.00 MiB.")
    sys.exit(1)
if RUN_DIR.name.startswith("small") and (RUN_DIR.parent / "hold").exists():
    deadline = time.time() + 30  # held on its device until the test lets it end
    while not (RUN_DIR.parent / "go").exists() and time.time() < deadline:
        time.sleep(0.01)
(RUN_DIR / "result.json").write_text("{}")
"""


def wait_until(condition, timeout: float = 30.0) -> bool:
    """Poll ``condition()`` until it holds or ``timeout`` seconds pass; whether it holds."""
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.01)
    return condition()


def when(condition, action) -> None:
    """Do ``action`` in a background thread once ``condition()`` holds (`wait_until`)."""
    threading.Thread(target=lambda: (wait_until(condition), action()), daemon=True).start()


def test_a_run_out_of_gpu_memory_starts_again_once_another_run_has_ended(tmp_path, monkeypatch):
    scripted_run(tmp_path, monkeypatch, OOM_ONCE)
    record_end = launch.record_end  # slowed, so a retry let in before the end is recorded would start before it
    monkeypatch.setattr(launch, "record_end", lambda run_dir: (time.sleep(0.1), record_end(run_dir))[1])
    out, logs = tmp_path / "out", tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    (out / "hold").touch()  # the small run stays on the device until the big one waits for memory
    turns = launch.DeviceTurns()
    when(lambda: turns.waiting["0"] > 0, lambda: (out / "go").touch())
    with ThreadPoolExecutor(2) as pool:
        small = pool.submit(launch.launch, {"name": "small__s0", "overrides": {}}, out, logs, "0", turns)
        assert wait_until(lambda: turns.active["0"] > 0)  # the small run holds the device when the big one fails
        big = pool.submit(launch.launch, {"name": "big__s0", "overrides": {}}, out, logs, "0", turns)
        statuses = small.result(), big.result()
    assert [s["status"] for s in statuses] == ["ok", "ok"] and statuses[1]["attempts"] == 2
    # the big run retried only after the small one ended, and in a clean folder: its failed attempt is kept apart
    assert json.loads((out / "big__s0" / "placement.json").read_text())["started"] >= json.loads(
        (out / "small__s0" / "placement.json").read_text())["ended"]
    assert (out / "big__s0" / "log.jsonl").read_text() == '{"attempt": 1}\n'
    assert (out / "big__s0.attempt1" / "log.jsonl").read_text() == '{"attempt": 1}\n'
    assert "CUDA out of memory" in (logs / "big__s0.attempt1.log").read_text()
    assert not (out / "big__s0.attempt1" / "result.json").exists()


def test_a_run_out_of_gpu_memory_alone_on_its_device_is_not_retried(tmp_path, monkeypatch):
    scripted_run(tmp_path, monkeypatch, OOM_ONCE)
    (tmp_path / "logs").mkdir()
    status = launch.launch({"name": "big__s0", "overrides": {}}, tmp_path / "out", tmp_path / "logs", "0")
    assert status["status"] == "exit 1 (out of GPU memory with no other run on its device)"
    assert status["attempts"] == 1 and not (tmp_path / "out" / "big__s0.attempt1").exists()
    # nor is any run whose failure is not memory, nor one out of retries
    scripted_run(tmp_path, monkeypatch, "print('ValueError: bad'); sys.exit(3)")
    assert launch.launch({"name": "x__s0", "overrides": {}}, tmp_path / "out", tmp_path / "logs")["status"] == "exit 3"


def test_a_new_attempt_never_appends_to_an_unfinished_runs_log(tmp_path, monkeypatch):
    scripted_run(tmp_path, monkeypatch, OOM_ONCE)
    out, logs = tmp_path / "out", tmp_path / "out" / "logs"
    for k in (1, 2):  # two earlier attempts already set aside; a third, killed, left its folder in place
        (out / f"small__s0.attempt{k}").mkdir(parents=True)
    (out / "small__s0").mkdir()
    (out / "small__s0" / "log.jsonl").write_text('{"killed": 1}\n')
    logs.mkdir()
    (logs / "small__s0.log").write_text("Traceback ...\nKeyboardInterrupt\n")
    assert launch.launch({"name": "small__s0", "overrides": {}}, out, logs)["status"] == "ok"
    assert (out / "small__s0" / "log.jsonl").read_text() == '{"attempt": 1}\n'
    assert (out / "small__s0.attempt3" / "log.jsonl").read_text() == '{"killed": 1}\n'
    speed = aggregate.step_speed(records.read(out))  # the aggregate lists the unfinished attempt and why it stopped
    assert "| small__s0.attempt3 | no | 0 | - | - | KeyboardInterrupt |" in speed
    assert "| small__s0 | yes |" in speed


def test_a_method_run_on_fewer_seeds_is_timed_against_every_seed_of_the_reference(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "wic", "mezo", 0, [(0, 0.50), (100, 0.60), (200, 0.60)], test=0.5, train_times=[0, 100, 200])
    fake_run(runs, "wic", "mezo", 1, [(0, 0.50), (300, 0.70)], test=0.5, train_times=[0, 300])
    fake_run(runs, "wic", "ablation", 0, [(0, 0.50), (20, 0.60), (60, 0.70)], test=0.6, train_times=[0, 20, 60])
    rows = run_rows.load_runs(runs)
    assert speedup.seeds_unpaired(rows, "mezo", ["ablation"])
    assert not speedup.seeds_unpaired(rows, "mezo", ["mezo"])
    same = speedup.speedups(rows, "mezo", ["mezo", "ablation"])
    assert sorted((f["method"], f["seed"]) for f in same) == [("ablation", 0), ("mezo", 0), ("mezo", 1)]
    across = speedup.speedups(rows, "mezo", ["mezo", "ablation"], across_seeds=True)
    pairs = {(f["method"], f["seed"], f["reference_seed"]): f["speedup"] for f in across}
    # the reference is still paired with itself only; the ablation's seed 0 meets both of mezo's targets
    assert pairs == {("mezo", 0, 0): 1.0, ("ablation", 0, 0): 100 / 20, ("mezo", 1, 1): 1.0,
                     ("ablation", 0, 1): 300 / 60}
    assert "| wic | 0 vs 1 | 0.700 | ablation | 60 | 300 | 5.00x |" in speedup.speedup_table(across, "mezo")
    aggregate.aggregate(runs, tmp_path / "res", ["mezo", "ablation"])
    across_md = (tmp_path / "res" / "speedup_across_seeds.md").read_text()
    assert "| wic | ablation | 5.0x, 5.0x | 5.0x | 0 / 0 |" in across_md and "## On training work" in across_md
    fake_run(runs, "wic", "ablation", 1, [(0, 0.50), (60, 0.70)], test=0.6)
    aggregate.aggregate(runs, tmp_path / "res2", ["mezo", "ablation"])
    assert not (tmp_path / "res2" / "speedup_across_seeds.md").exists()  # every seed paired: nothing to add


def test_every_method_drawn_gets_its_own_colour_past_ten_methods():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for n in (3, 11, 20):
        colors = plots.method_colors(plt, [f"m{i}" for i in range(n)])
        assert len(set(colors.values())) == n


def test_the_table_shows_the_memory_a_process_reserved_where_runs_recorded_it(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "cb", "bilevel", 0, [(0, 0.5), (10, 0.6)], test=0.6, peak=800, reserved=1300)
    fake_run(runs, "cb", "bilevel", 1, [(0, 0.5), (10, 0.6)], test=0.6, peak=900)  # an older run: not recorded
    fake_run(runs, "cb", "mezo", 0, [(0, 0.5), (10, 0.6)], test=0.6, peak=500)
    table = tables.markdown(run_rows.load_runs(runs))
    assert "| bilevel | 10.0 | 900 | 1300 | 3-3 |" in table
    assert "| mezo | 10.0 | 500 | - | 3-3 |" in table


def test_list_shows_the_runs_selected_and_only_refuses_a_string_that_matches_none(tmp_path, capsys):
    study_file = tmp_path / "s.yaml"
    study_file.write_text("tasks: [{name: cb, task: cb}, {name: wic, task: wic}]\n"
                          "methods: [{name: mezo, set: {}}, {name: fo-lora, set: {}}]\nseeds: [0, 1]\n")
    out = tmp_path / "out"
    (out / "cb__mezo__s1").mkdir(parents=True)
    (out / "cb__mezo__s1" / "result.json").write_text("{}")
    study.run_study(study_file, out, 2, "DATA", ["cb__mezo"], listing=True)
    assert capsys.readouterr().out.splitlines() == ["cb__mezo__s0", "cb__mezo__s1  (done before)", "2 runs"]
    assert not (out / "logs").exists()  # listing launches and writes nothing
    with pytest.raises(SystemExit, match="--only cb__meso: matches no run of the study; its names look like "
                                         "cb__mezo__s0"):
        study.run_study(study_file, out, 2, "DATA", ["cb__mezo", "cb__meso"], listing=True)


def test_a_negative_oom_retry_count_is_refused(tmp_path):
    study_file = tmp_path / "s.yaml"
    study_file.write_text("tasks: [{name: cb, task: cb}]\nmethods: [{name: mezo, set: {}}]\n")
    with pytest.raises(SystemExit, match="--oom-retries -1: give 0 \\(never retry\\) or more"):
        study.run_study(study_file, tmp_path / "out", 1, "DATA", None, oom_retries=-1)


STOPPABLE = """
import json, pathlib, signal, sys, time
overrides = json.loads(sys.argv[1])
run_dir = pathlib.Path(overrides["train.output_dir"])
log = (run_dir / "log.jsonl").open("a")
if "train.resume" in overrides:
    log.write(json.dumps({"resumed from": overrides["train.resume"]}) + "\\n")
    (run_dir / "checkpoint" / "loop.json").write_text('{"step": 6}')  # the final checkpoint replaces it
    (run_dir / "result.json").write_text("{}")
    sys.exit(0)


def checkpoint_and_stop(signum, frame):  # what zofo train does on its first SIGTERM
    (run_dir / "checkpoint").mkdir()
    (run_dir / "checkpoint" / "loop.json").write_text('{"step": 3}')
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, checkpoint_and_stop)
log.write('{"first": 1}\\n')
log.close()
(run_dir / "started").write_text("")
time.sleep(60)
"""


def test_a_stopped_study_checkpoints_its_runs_and_a_rerun_continues_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launch, "train_command", lambda run, out: [
        sys.executable, "-c", STOPPABLE, json.dumps(launch.run_overrides(run, out))])
    out, logs = tmp_path / "out", tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    listed = tmp_path / "study.yaml"
    listed.write_text(yaml.safe_dump({"tasks": [{"name": "cb", "task": "cb"}], "seeds": [0, 1],
                                      "methods": [{"name": "mezo", "set": {"optim.lr": 1e-4}}]}))
    run, later = study.expand(yaml.safe_load(listed.read_text()), "DATA")
    stop = launch.StudyStop()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(launch.launch, run, out, logs, None, None, 2, stop)
        assert wait_until((out / run["name"] / "started").exists)
        stop.ask(signal.SIGTERM, None)
        assert pool.submit(launch.launch, later, out, logs, None, None, 2, stop).result(timeout=30) == {
            "name": "cb__mezo__s1", "status": "not started: the study was stopped"}
        status = first.result(timeout=30)
    assert status["status"] == "stopped (exit 143): checkpoint at step 3, run the study again to continue"
    study.run_study(listed, out, 1, "DATA", None, listing=True)
    assert capsys.readouterr().out.splitlines() == ["cb__mezo__s0  (continues from step 3)", "cb__mezo__s1", "2 runs"]
    again = launch.launch(run, out, logs)
    assert again["status"] == "ok" and again["resumed_from_step"] == 3
    assert not (out / later["name"]).exists()  # a run never started leaves no folder
    checkpoint = out / run["name"] / "checkpoint"
    assert (out / run["name"] / "log.jsonl").read_text() == (
        '{"first": 1}\n' + json.dumps({"resumed from": str(checkpoint)}) + "\n")  # continued, not set aside
    assert not (out / "cb__mezo__s0.attempt1").exists()


HUNG = """
import os, pathlib, signal, sys, time
from zofo.run.interrupt import stacks_on_request
if sys.argv[2] == "stacks":
    stacks_on_request()
signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a run whose step never ends never acts on the stop
pathlib.Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
pathlib.Path(sys.argv[1], "started").write_text(str(os.getpid()))


def a_step_that_never_ends():
    while True:
        time.sleep(0.05)


a_step_that_never_ends()
"""


@pytest.mark.parametrize("handler", ["stacks", "none"])
def test_a_run_still_running_past_the_stop_grace_leaves_its_stacks_in_its_log_and_is_ended(tmp_path, monkeypatch,
                                                                                           handler):
    """With zofo's SIGUSR1 handler the run writes its stacks and is killed; without one, SIGUSR1 itself ends it."""
    monkeypatch.setattr(launch, "train_command", lambda run, out: [
        sys.executable, "-c", HUNG, str(out / run["name"]), handler])
    out, logs = tmp_path / "out", tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    run = study.expand({"tasks": [{"name": "cb", "task": "cb"}], "methods": [{"name": "mezo"}]}, "DATA")[0]
    started = out / run["name"] / "started"
    stop = launch.StudyStop(grace=1.0)
    pool = ThreadPoolExecutor(1)
    try:
        running = pool.submit(launch.launch, run, out, logs, None, None, 2, stop)
        assert wait_until(lambda: started.exists() and started.read_text())
        asked = time.monotonic()
        stop.ask(signal.SIGTERM, None)
        status = running.result(timeout=60)
    finally:  # a broken kill must fail the test, not hang it
        if started.exists() and started.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(started.read_text()), signal.SIGKILL)
        pool.shutdown()
    assert time.monotonic() - asked >= 1.0
    assert status["status"] == ("killed, still running 1 s after the stop (its threads' stacks are in its log): "
                                "no checkpoint")
    log = (logs / f"{run['name']}.log").read_text()
    assert log.rstrip().endswith("zofo study: still running 1 s after the stop: asked for its threads' stacks (above, "
                                 "where it could write them) and ended")
    dumped = re.search(r"\(most recent call first\):\n(.|\n)*line \d+ in a_step_that_never_ends\n", log)
    assert bool(dumped) == (handler == "stacks"), log


def test_a_run_that_ends_in_its_grace_is_reported_as_stopped_not_killed(tmp_path, monkeypatch):
    ends_late = ("import pathlib, signal, sys, time\n"
                 "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), sys.exit(143)))\n"
                 "pathlib.Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)\n"
                 "pathlib.Path(sys.argv[1], 'started').write_text('')\n"
                 "time.sleep(60)\n")
    monkeypatch.setattr(launch, "train_command", lambda run, out: [
        sys.executable, "-c", ends_late, str(out / run["name"])])
    out, logs = tmp_path / "out", tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    run = study.expand({"tasks": [{"name": "cb", "task": "cb"}], "methods": [{"name": "mezo"}]}, "DATA")[0]
    stop = launch.StudyStop(grace=30.0)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(launch.launch, run, out, logs, None, None, 2, stop)
        assert wait_until((out / run["name"] / "started").exists)
        stop.ask(signal.SIGTERM, None)
        status = running.result(timeout=60)
    assert status["status"] == "stopped (exit 143): no checkpoint" and not stop.ended_by_us
    assert "zofo study" not in (logs / f"{run['name']}.log").read_text()


def test_no_run_starts_after_the_start_deadline_and_the_running_one_finishes(tmp_path, monkeypatch, capsys):
    finishing = "import pathlib, sys, time; time.sleep(1.5); pathlib.Path(sys.argv[1], 'result.json').write_text('{}')"
    monkeypatch.setattr(launch, "train_command", lambda run, out: [
        sys.executable, "-c", finishing, str(out / run["name"])])
    listed = tmp_path / "study.yaml"
    listed.write_text(yaml.safe_dump({"tasks": [{"name": "cb", "task": "cb"}], "seeds": [0, 1],
                                      "methods": [{"name": "mezo", "set": {"optim.lr": 1e-4}}]}))
    out = tmp_path / "out"
    assert study.run_study(listed, out, 1, "DATA", None, start_until=0.5) is None
    printed = capsys.readouterr().out.splitlines()
    statuses = [json.loads(line) for line in printed[1:-1]]
    assert [(s["name"], s["status"]) for s in statuses] == [
        ("cb__mezo__s0", "ok"), ("cb__mezo__s1", "not started: past --start-until 0.5 s")]
    assert printed[-1] == "1 of 2 runs not started (past --start-until 0.5 s): run the study again"
    assert (out / "cb__mezo__s0" / "result.json").exists() and not (out / "cb__mezo__s1").exists()
    with pytest.raises(SystemExit, match="--start-until -1"):
        study.run_study(listed, out, 1, "DATA", None, start_until=-1)
    with pytest.raises(SystemExit, match="--stop-grace -1: give the seconds a stopped run has to end"):
        study.run_study(listed, out, 1, "DATA", None, stop_grace=-1)


def test_runs_together_past_the_start_deadline_touch_no_folder(tmp_path, capsys):
    """In --together mode too, a group past the deadline is refused before any folder is set aside or made."""
    listed = tmp_path / "study.yaml"
    listed.write_text(yaml.safe_dump({"tasks": [{"name": "cb", "task": "cb"}], "seeds": [0, 1, 2],
                                      "methods": [{"name": "mezo", "set": {"optim.lr": 1e-4}}]}))
    out = tmp_path / "out"
    (out / "cb__mezo__s0").mkdir(parents=True)
    (out / "cb__mezo__s0" / "log.jsonl").write_text('{"an": "unfinished earlier attempt"}\n')
    study.run_study(listed, out, 1, "DATA", None, together=2, start_until=0)
    printed = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["status"] for line in printed[1:-1]] == ["not started: past --start-until 0 s"] * 3
    assert printed[-1].startswith("3 of 3 runs not started")
    assert sorted(p.name for p in out.iterdir()) == ["cb__mezo__s0", "logs", "study.yaml"]
    assert list((out / "logs").iterdir()) == []


def test_a_run_out_of_memory_past_the_deadline_keeps_its_status_and_waits_for_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "train_command", lambda run, out: [
        sys.executable, "-c", "import sys, time; time.sleep(0.6); print('CUDA out of memory'); sys.exit(1)"])
    turns = launch.DeviceTurns()
    turns.start(None)  # another run holds the device: a retry would wait for it to end, which never happens here
    out, logs = tmp_path / "out", tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    run = study.expand({"tasks": [{"name": "cb", "task": "cb"}], "methods": [{"name": "mezo"}]}, "DATA")[0]
    status = launch.launch(run, out, logs, None, turns, 2, launch.StudyStop(start_until=0.3))
    assert status["status"] == "exit 1 (out of GPU memory), not started again: past --start-until 0.3 s"
    assert status["attempts"] == 1 and status["seconds"] >= 0.6


def test_a_checkpoint_left_with_other_settings_is_set_aside_not_resumed(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "train_command", lambda run, out: [
        sys.executable, "-c", STOPPABLE.replace("time.sleep(60)", "(run_dir / 'result.json').write_text('{}')"),
        json.dumps(launch.run_overrides(run, out))])
    out, logs = tmp_path / "out", tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    run_dir = out / "cb__mezo__s0"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "loop.json").write_text('{"step": 3}')
    launch.record_placement(run_dir, None, {}, launch.run_overrides({"name": "cb__mezo__s0",
                                                                    "overrides": {"optim.lr": 1e-3}}, out))
    status = launch.launch({"name": "cb__mezo__s0", "overrides": {"optim.lr": 1e-4}}, out, logs)
    assert status["status"] == "ok" and "resumed_from_step" not in status
    assert (out / "cb__mezo__s0.attempt1" / "checkpoint" / "loop.json").exists()
    assert (run_dir / "log.jsonl").read_text() == '{"first": 1}\n'


def test_selected_md_names_grid_points_that_trained_unequally_far(tmp_path):
    """The starting point ran its 100 steps; a grid point, capped by time on a busier GPU, ran 40 of 100; another
    task's two points both ran theirs."""
    runs = tmp_path / "runs"
    for task, method, steps, dev in (("cb", "mezo", 100, [(0, 0.5), (1, 0.55), (2, 0.7)]),
                                     ("cb", "mezo@lr0.001", 40, [(0, 0.5), (1, 0.6)]),
                                     ("copa", "mezo", 100, [(0, 0.5), (1, 0.6)]),
                                     ("copa", "mezo@lr0.001", 95, [(0, 0.5), (1, 0.6)])):
        fake_run(runs, task, method, 0, dev, test=0.5, config={"train": {"steps": 100}})
        result_file = runs / f"{task}__{method}__s0" / "result.json"
        result_file.write_text(json.dumps({**json.loads(result_file.read_text()), "steps": steps}))
        log_file = runs / f"{task}__{method}__s0" / "log.jsonl"  # evaluations at steps 0, 30, 80
        log = [json.loads(line) for line in log_file.read_text().splitlines()]
        dev_steps = iter((0, 30, 80))
        log_file.write_text("\n".join(json.dumps(e | ({"step": next(dev_steps)} if e["phase"] == "dev" else {}))
                                      for e in log))
    aggregate.aggregate(runs, tmp_path / "res", ["mezo"])
    selected = (tmp_path / "res" / "selected.md").read_text()
    assert "Grid points that trained unequally far" in selected and "- copa mezo" not in selected
    # on the whole runs the starting point wins (0.7 at step 80); up to step 40, the last the grid point reached,
    # the grid point does (0.6 against 0.55 at step 30)
    assert ("- cb mezo: mezo 100%, mezo@lr0.001 40%; best dev up to step 40: mezo 0.550, mezo@lr0.001 0.600 "
            "-> mezo@lr0.001, not mezo") in selected


def test_runs_an_earlier_session_finished_are_skipped_and_a_changed_one_is_refused(tmp_path, monkeypatch, capsys):
    finishing = "import pathlib, sys; pathlib.Path(sys.argv[1], 'result.json').write_text('{\"steps\": 1}')"
    monkeypatch.setattr(launch, "train_command", lambda run, out: [
        sys.executable, "-c", finishing, str(out / run["name"])])
    listed = tmp_path / "study.yaml"
    spec = {"tasks": [{"name": "cb", "task": "cb", "data": "CB"}], "seeds": [0, 1],
            "methods": [{"name": "mezo", "set": {"optim.lr": 1e-4}}]}
    listed.write_text(yaml.safe_dump(spec))
    earlier = tmp_path / "session1"
    study.run_study(listed, earlier, 1, "DATA1", ["cb__mezo__s0"])
    records_file = records.compact(earlier)
    capsys.readouterr()
    later = tmp_path / "session2"
    study.run_study(listed, later, 1, "DATA2", None, done=[records_file])  # another data root: where, not what
    statuses = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(s["name"], s["status"]) for s in statuses] == [
        ("cb__mezo__s0", f"done before (in {records_file})"), ("cb__mezo__s1", "ok")]
    assert not (later / "cb__mezo__s0").exists()
    study.run_study(listed, tmp_path / "session3", 1, "DATA", None, listing=True, done=[records_file])
    assert capsys.readouterr().out.splitlines() == [
        "cb__mezo__s1", "1 runs (1 more finished in --done)"]  # --list with --done: what is left to run, only
    spec["methods"][0]["set"]["optim.lr"] = 3e-4
    listed.write_text(yaml.safe_dump(spec))
    refused = r"cb__mezo__s0 finished there with optim.lr=0.0001, the study now sets 0.0003"
    with pytest.raises(SystemExit, match=refused):
        study.run_study(listed, tmp_path / "session3", 1, "DATA", None, done=[records_file])
    with pytest.raises(SystemExit, match=refused):  # --list refuses it too: its "left to run" would be wrong
        study.run_study(listed, tmp_path / "session3", 1, "DATA", None, listing=True, done=[records_file])


@pytest.mark.parametrize("last_line, out_of_memory", [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB.", True),
    ("RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR", True),  # a full card refused cuDNN's workspace
    ("RuntimeError: CUDA error: out of memory", True),
    ("RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", True),
    ("ValueError: data.task 'cb' has no split 'dev'", False),
])
def test_a_run_counts_as_out_of_gpu_memory_by_how_its_output_ends(tmp_path, last_line, out_of_memory):
    log = tmp_path / "run.log"
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n" + last_line + "\n")
    assert launch.ran_out_of_memory(log) is out_of_memory


def test_a_sigterm_from_outside_stops_every_run_of_a_together_worker_with_its_checkpoint(tmp_path, tiny_model_dir,
                                                                                        shared_data):
    """The worker as study.py starts it, signalled from outside as `timeout` or a study's stop does it."""
    settings = {"model.name": str(tiny_model_dir), "data.task": "sst2", "data.data": str(shared_data / "sst2"),
                "data.n_train": 16, "data.n_dev": 8, "data.n_test": 8, "data.max_length": 32, "train.batch_size": 4,
                "train.eval_every": 0, "train.progress": "false", "train.steps": 1_000_000, "train.log_every": 5}
    methods = ["fo-peft", "bilevel-zofo"]
    job = tmp_path / "job.json"
    job.write_text(json.dumps([{"name": m, "overrides": {**settings, "train.method": m, "peft.kind": "lora",
                                                         "train.output_dir": str(tmp_path / m)}} for m in methods]))
    worker = subprocess.Popen([sys.executable, str(Path(launch.__file__).with_name("worker.py")), str(job)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
    try:
        assert wait_until(lambda: all((tmp_path / m / "log.jsonl").exists() and '"train"' in
                                      (tmp_path / m / "log.jsonl").read_text() for m in methods), timeout=300)
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=120)
    finally:
        worker.kill()
    statuses = {s["name"]: s["status"] for s in map(json.loads, (line for line in out.splitlines()
                                                                 if line.startswith('{"name"')))}
    assert set(statuses) == set(methods) and worker.returncode == 1, out
    for m in methods:
        assert statuses[m].startswith("error: TrainingInterrupted: interrupted by SIGTERM after step "), statuses
        assert json.loads((tmp_path / m / "checkpoint" / "loop.json").read_text())["step"] > 0
