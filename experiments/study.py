"""Run a study: methods x tasks x seeds, each run an independent `zofo train` process, several sharing the GPU.

    python experiments/study.py STUDY.yaml --out runs/x --parallel 12 [--devices 0 1] [--only cb__] [--seeds 1 2]
    python experiments/study.py STUDY.yaml --out runs/x --parallel 2 --together 10      (10 runs a process)
    python experiments/study.py STUDY.yaml --out runs/y --extend runs/x                  (the steps past grid edges)
    python experiments/study.py STUDY.yaml --out runs/x --start-until 300     (start no run after 300 s: a last call)
    python experiments/study.py STUDY.yaml --out runs/x --done OLD/runs.jsonl.gz   (skip what a session finished)
    (with --list: what is left to run)
    python experiments/study.py --aggregate runs/x [runs/redo --reruns] --results OUT    (experiments/report/)

A study file (YAML) declares the shared settings (`common`), the tasks (data folders, `templates`), the methods (each
its overrides and its `grid`: ``{optim.lr: [1e-5, 3e-5]}`` becomes ``name@lr1e-05`` and ``name@lr3e-05``; a key
"a.x,b.y" ties both keys to each value), the seeds, optionally the data splits (`splits: [0, 1, 2]`: each run of
training seed s on split d sets data.seed d and is named ``__s<10 d + s>``, so the report's mean over a cell's "seeds"
is the mean over every (split, seed), and a choice on dev averages the splits), and the search rule
(`search.steps_past_edge`, experiments/search.py). Each run writes its folder (config.yaml, log.jsonl, result.json)
and placement.json (its device and start and end times: the report counts the runs that shared its GPU from them).

Why the process management below: runs share a GPU to keep it busy, so a run may fail for want of memory; it then
waits for another run on its device to end and starts again (``--oom-retries``), its failed attempt kept as
``NAME.attemptK``. A stop (SIGINT, SIGTERM, e.g. a call's time limit) must not lose work: no run starts any more,
each running one saves a checkpoint, and running the study again continues every run whose settings are unchanged.
A run that has not ended ``--stop-grace`` seconds after the stop (a step that never ends: one such process held a
GPU's memory for ten minutes past its call) has its threads' stacks written to its log and is killed.
experiments/README.md has the rest: records, regeneration, and how the historical study files map to these.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.launch import (  # noqa: E402
    STOP_GRACE,
    DeviceTurns,
    changed_settings,
    launch,
    launch_together,
    listed_state,
    run_overrides,
    stopped_by_signals,
    together_groups,
)
from experiments.records import read as read_records  # noqa: E402
from experiments.report.aggregate import aggregate  # noqa: E402
from experiments.report.runs import load_runs  # noqa: E402
from experiments.search import next_points  # noqa: E402


def grid_points(method: dict) -> list[dict]:
    """A method entry with ``grid`` -> one entry per combination, named name@<key><value>...; a grid key
    "a.x,b.y" sets both keys to each value (e.g. tied upper and lower learning rates)."""
    grid = method.get("grid") or {}
    points = [(method["name"], dict(method.get("set", {})))]
    for key, values in grid.items():
        keys = key.split(",")
        short = keys[0].rsplit(".", 1)[-1]
        points = [(f"{name}{'@' if '@' not in name else '-'}{short}{value}", {**sets, **dict.fromkeys(keys, value)})
                  for name, sets in points for value in values]
    return [{**method, "name": name, "set": sets, "grid": None} for name, sets in points]


def template_tasks(task: dict) -> list[dict]:
    """A task entry with ``templates`` -> one entry per template, named name@template."""
    if not task.get("templates"):
        return [task]
    return [{**task, "name": f"{task['name']}@{t}", "set": {**task.get("set", {}), "data.template": t}}
            for t in task["templates"]]


def seed_labels(study: dict, trains: bool = True) -> list[tuple[int, dict]]:
    """(the run's seed label, its seed overrides) for every training seed, on every data split if the study has
    `splits` (label 10 d + s for seed s on split d, so seeds must stay below 10); methods that train nothing run seed
    0 only (on every split)."""
    seeds = study.get("seeds", [0]) if trains else [0]
    splits = study.get("splits")
    if splits is None:
        return [(seed, {"train.seed": seed}) for seed in seeds]
    if any(not 0 <= seed < 10 for seed in seeds) or any(split < 0 for split in splits):
        raise SystemExit(f"a study with splits takes seeds 0-9 and splits >= 0 (got seeds {seeds}, splits {splits}): "
                         "run names carry 10 x split + seed")
    return [(10 * split + seed, {"train.seed": seed, "data.seed": split}) for split in splits for seed in seeds]


def expand(study: dict, data_root: str) -> list[dict]:
    """One entry per (task, method, seed): its name and its `--set` overrides."""
    runs = []
    tasks = [t for task in study["tasks"] for t in template_tasks(task)]
    methods = [m for method in study["methods"] for m in grid_points(method)]
    for task in tasks:
        for method in methods:
            for label, seeded in seed_labels(study, method.get("trains", True)):
                overrides = {**study.get("common", {}), **task.get("set", {}), **method.get("set", {}),
                             "data.task": task["task"], **seeded}
                if task.get("data"):
                    overrides["data.data"] = str(Path(data_root) / task["data"])
                name = f"{task['name']}__{method['name']}__s{label}"
                runs.append({"name": name, "task": task["name"], "method": method["name"], "seed": label,
                             "overrides": overrides})
    return runs


def selected(runs: list[dict], only: list[str] | None) -> list[dict]:
    """The runs whose name contains one of ``only`` (all if None); a string that matches no run is an error (a
    typo would otherwise run nothing, or less than meant, in silence)."""
    unmatched = [o for o in only or [] if not any(o in r["name"] for r in runs)]
    if unmatched:
        raise SystemExit(f"--only {' '.join(unmatched)}: matches no run of the study; its names look like "
                         f"{runs[0]['name'] if runs else '(none: the study has no runs)'} (task__method__sSEED)")
    return [r for r in runs if only is None or any(o in r["name"] for o in only)]


def extended(study: dict, data_root: str, sources: list[Path]) -> list[dict]:
    """The runs of the steps past grid edges that the study's search rule asks for, given the finished runs in
    ``sources`` (`search.next_points`)."""
    tasks = {t["name"]: t for t in study["tasks"] if not t.get("templates")}
    rows = load_runs(*sources, reruns=True)
    return [run for task, method in next_points(study, rows) if task in tasks
            for run in expand({**study, "tasks": [tasks[task]], "methods": [method]}, data_root)]


#: settings that name where a run ran (its folder, its data's path on that machine), not what it is
WHERE = ("train.output_dir", "data.data")


def not_done(runs: list[dict], sources: list[Path], out: Path, report: bool = True) -> list[dict]:
    """``runs`` less those that finished in ``sources`` (run folders or records files of earlier sessions), each
    reported as done there by a status line (``report``). A finished run recorded with other settings than the
    study's now is refused: skipping it would pool two different runs under one name."""
    finished = {}
    for source in sources:
        finished |= {r["name"]: (r, source) for r in read_records(source) if r.get("result")}
    todo = []
    for run in runs:
        if run["name"] not in finished:
            todo.append(run)
            continue
        record, source = finished[run["name"]]
        then = (record.get("placement") or {}).get("overrides") or {}
        if then and (changed := changed_settings(then, run, out, ignore=WHERE)):
            key = changed[0]
            raise SystemExit(f"--done {source}: {run['name']} finished there with {key}={then.get(key)!r}, the study "
                             f"now sets {run_overrides(run, out).get(key)!r}; run it again under another --out, or "
                             "leave that source out")
        if report:
            print(json.dumps({"name": run["name"], "status": f"done before (in {source})"}), flush=True)
    return todo


def check_limits(oom_retries: int, start_until: float | None, stop_grace: float = STOP_GRACE) -> None:
    if oom_retries < 0:
        raise SystemExit(f"--oom-retries {oom_retries}: give 0 (never retry) or more")
    if start_until is not None and start_until < 0:
        raise SystemExit(f"--start-until {start_until:g}: give the seconds from now after which no run starts "
                         "(0 or more)")
    if stop_grace < 0:
        raise SystemExit(f"--stop-grace {stop_grace:g}: give the seconds a stopped run has to end before it is "
                         "killed (0 or more)")


def run_study(study_file: Path, out: Path, parallel: int, data_root: str, only: list[str] | None,
              seeds: list[int] | None = None, devices: list[str] | None = None, together: int = 1,
              oom_retries: int = 2, listing: bool = False, extend: list[Path] | None = None,
              splits: list[int] | None = None, start_until: float | None = None,
              done: list[Path] | None = None, stop_grace: float = STOP_GRACE) -> int | None:
    """Launch the study's runs; returns the signal that stopped it, if one did."""
    check_limits(oom_retries, start_until, stop_grace)
    study = yaml.safe_load(study_file.read_text())
    if seeds is not None:
        study["seeds"] = seeds
    if splits is not None:
        study["splits"] = splits
    runs = selected(extended(study, data_root, extend) if extend else expand(study, data_root), only)
    left = not_done(runs, done or [], out, report=not listing)
    if listing:  # what would run, and what is there already
        for run in left:
            print(run["name"] + listed_state(run, out))
        skipped = len(runs) - len(left)
        print(f"{len(left)} runs" + (f" ({skipped} more finished in --done)" if skipped else ""))
        return None
    runs = left
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    (out / "study.yaml").write_text(study_file.read_text())
    print(f"{len(runs)} runs, {parallel} at a time on devices {devices or 'as found'} -> {out}", flush=True)
    placed = [devices[i % len(devices)] if devices else None for i in range(len(runs))]  # round robin
    unstarted = 0
    with stopped_by_signals(start_until, stop_grace) as stop, ThreadPoolExecutor(parallel) as pool:
        if together > 1:  # `parallel` processes at once, each training `together` runs side by side
            results = (status for statuses in pool.map(lambda g: launch_together(g[0], out, out / "logs", g[1], stop),
                                                       together_groups(runs, placed, together)) for status in statuses)
        else:
            turns = DeviceTurns()
            results = pool.map(lambda r, d: launch(r, out, out / "logs", d, turns, oom_retries, stop), runs, placed)
        for status in results:
            print(json.dumps(status), flush=True)
            unstarted += "not started" in status.get("status", "")
    if unstarted:  # the line a session's driver looks for: another call has work to do
        print(f"{unstarted} of {len(runs)} runs not started ({stop.closed()}): run the study again", flush=True)
    return stop.signal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", type=Path, help="study YAML")
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--parallel", type=int, default=4, help="runs at once (they share the device)")
    parser.add_argument("--data-root", default=os.environ.get("ZOFO_DATA", "../shared/data"))
    parser.add_argument("--only", nargs="+", default=None, help="run only names containing one of these strings")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="CUDA devices to spread the runs over, round robin (e.g. 0 1)")
    parser.add_argument("--together", type=int, default=1,
                        help="runs per process, trained side by side on their own CUDA streams (zofo.run.concurrent); "
                             "--parallel then counts processes. Peak memory is not recorded for them")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the study's seeds")
    parser.add_argument("--splits", type=int, nargs="+", default=None, help="replace the study's data splits")
    parser.add_argument("--list", action="store_true",
                        help="print the runs that would be launched (after --only, --seeds and --splits) and exit")
    parser.add_argument("--oom-retries", type=int, default=2,
                        help="times a run that ran out of GPU memory starts again, each after another run on its "
                             "device has ended (0: never)")
    parser.add_argument("--start-until", type=float, default=None, metavar="SECONDS",
                        help="start no run (nor a retry) after SECONDS from now; the running ones go on to their end "
                             "(a session's last call, whose part-done runs would be lost with the machine)")
    parser.add_argument("--stop-grace", type=float, default=STOP_GRACE, metavar="SECONDS",
                        help="after a stop (SIGINT or SIGTERM to the study), the seconds a running run has to save "
                             "its checkpoint and end; one still running then has its threads' stacks written to its "
                             "log and is killed (default %(default)g; a caller that stops the study with `timeout` "
                             "gives one that ends inside its own limit)")
    parser.add_argument("--done", type=Path, nargs="+", default=None, metavar="RECORDS",
                        help="skip the runs that finished in these run folders or records files (an earlier "
                             "session's), refusing one that ran with other settings")
    parser.add_argument("--extend", type=Path, nargs="+", default=None,
                        help="run the steps past grid edges that the study's search rule (search.steps_past_edge) "
                             "asks for, given the finished runs in these folders or records files")
    parser.add_argument("--aggregate", type=Path, nargs="+", default=None,
                        help="aggregate the runs in these folders (several: pooled, e.g. studies of several sessions)")
    parser.add_argument("--reruns", action="store_true",
                        help="with --aggregate: a run found in two folders is taken from the later one (a run made "
                             "again) instead of being refused")
    parser.add_argument("--results", type=Path, default=Path("runs/study-results"))
    parser.add_argument("--curves", default="mezo,zo-lora,bilevel-zofo-lora,fo-lora",
                        help="methods drawn in the dev-against-wall-clock plot, timed in speedup.md and placed in "
                        "pareto.png (those a study did not run are left out)")
    parser.add_argument("--reference", default="mezo", help="the method whose final dev accuracy is the target")
    parser.add_argument("--select-seeds", type=int, nargs="+", default=None,
                        help="choose grid points on the dev accuracy of these seeds only (default: every seed; "
                             "with data splits, the run labels: 0 10 20 is seed 0 of splits 0-2)")
    parser.add_argument("--paired", default=None,
                        help="also write paired.md: this method against every other, paired by task and seed "
                             "(test accuracy differences, peak memory ratios)")
    args = parser.parse_args()
    if args.aggregate:
        aggregate(args.aggregate, args.results, args.curves.split(","), args.reference, args.paired,
                  args.select_seeds, args.reruns)
    else:
        stopped_by = run_study(args.study, args.out, args.parallel, args.data_root, args.only, args.seeds,
                               args.devices, args.together, args.oom_retries, args.list, args.extend, args.splits,
                               args.start_until, args.done, args.stop_grace)
        if stopped_by is not None:  # as a process ended by that signal would
            raise SystemExit(128 + stopped_by)


if __name__ == "__main__":
    main()
