"""A study's runs as rows of the report: loading and pooling them, and what every table reads from a row."""

from __future__ import annotations

import math
from pathlib import Path

from experiments import records
from zofo.run.logs import CLOCKS, shared_clock

WORK = "work"  # a clock of our own: training sequences processed (`add_work_clock`)


CLOCK_NAMES = {**CLOCKS, WORK: "thousands of training sequences processed, forward plus backward"}


Sources = list[tuple[Path, list[dict]]]  # (path as given, its run records): what the report reads


def read_sources(*outs: Path) -> Sources:
    """The run records of each of ``outs`` (folders of run folders or their compacted files, `records.read`)."""
    return [(out, records.read(out)) for out in outs]


def load_runs(*outs: Path, reruns: bool = False) -> list[dict]:
    """Every finished run in ``outs`` (`rows_of`)."""
    return rows_of(read_sources(*outs), reruns)


def rows_of(sources: Sources, reruns: bool = False) -> list[dict]:
    """Every finished run of ``sources`` (studies of several sessions can be pooled), in the order of its path
    OUT/NAME/result.json. A run name found twice is an error, not a silent overwrite, unless `reruns`: then the
    later source's run (a run made again, e.g. under fairer conditions) replaces the earlier one, and each
    replacement is printed."""
    found: dict[str, tuple[Path, dict]] = {}
    for out, record in ((out, r) for out, found_records in sources for r in found_records if r["result"] is not None):
        name = record["name"]
        if name in found and not reruns:
            raise ValueError(f"run {name} is in both {found[name][0].parent.parent} and {out}: pool studies whose runs "
                             "differ, or pass --reruns to let the later folder's run replace the earlier one")
        if name in found:
            print(f"{name}: the run in {out} replaces the one in {found[name][0].parent.parent}")
        found[name] = (out / name / "result.json", record)
    return [load_run(record) for _, record in sorted(found.values(), key=lambda found_run: found_run[0])]


def load_run(record: dict) -> dict:
    """One run's row: task, method and seed from its name, its result and its log (`records.run_record`)."""
    task, method, seed = record["name"].split("__")
    return add_work_clock({"task": task, "method": method, "seed": int(seed[1:]), "result": record["result"],
                           "log": record["log"]})


def add_work_clock(row: dict, backward_cost: float = 1.0) -> dict:
    """Give every dev evaluation of a run a `work` reading: thousands of training sequences through the model by
    then, a backward pass counted as ``backward_cost`` forwards (1 in every table: a PEFT backward computes
    activation gradients only, about a forward's matrix products; the ZO methods have none;
    `experiments/work_cost.py` shows the speed-ups under other costs). Each method's work per step is constant, so
    it is the step times the run's total over its steps. Unlike seconds, it does not depend on what else ran on the
    GPU. Runs from before `work` was recorded get none."""
    work, steps = row["result"].get("work"), row["result"].get("steps")
    if work and steps:
        per_step = (work["forward_rows"] + backward_cost * work["backward_rows"]) / steps / 1000
        for entry in dev_entries(row):
            entry[WORK] = entry["step"] * per_step
    return row


def metric_of(result: dict) -> float:
    test = result["test"]
    return test.get("accuracy", test.get("f1"))


def _seed_values(rows: list[dict], value) -> dict[tuple[str, str], list[float]]:
    """{(task, method): [value(row) of each seed's run]}."""
    cells: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        cells.setdefault((row["task"], row["method"]), []).append(value(row))
    return cells


def base(name: str) -> str:
    """A grid point's or template's family: the part before '@'."""
    return name.split("@", 1)[0]


def step_budget(row: dict) -> int | None:
    """The run's step budget (train.steps of the config it saved), if it saved one."""
    return row["result"].get("config", {}).get("train", {}).get("steps")


def budget_share(row: dict) -> float | None:
    """The share of its step budget a run reached (None for a run without a recorded budget)."""
    steps, budget = row["result"].get("steps"), row["result"].get("config", {}).get("train", {}).get("steps")
    return steps / budget if steps is not None and budget else None


def best_dev_until(row: dict, step: int) -> float:
    """A run's best dev metric over its evaluations up to ``step`` (nan if none)."""
    return max((e.get("accuracy", e.get("f1")) for e in dev_entries(row) if e["step"] <= step), default=math.nan)


def _peak(row: dict) -> float:
    return row["result"].get("peak_memory_mib", {}).get("train_step", 0.0)


def clock_of(rows: list[dict]) -> str:
    """The clock that runs are compared on: the one every dev evaluation of every one of them carries."""
    return shared_clock(e for r in rows for e in dev_entries(r))


def dev_entries(row: dict) -> list[dict]:
    """A run's dev evaluations from its log, in order."""
    return [e for e in row["log"] if e.get("phase") == "dev"]


def dev_curve(row: dict, clock: str = "time") -> list[tuple[float, float]]:
    """(reading of `clock`, dev accuracy) of every evaluation of a run."""
    return [(e[clock], e.get("accuracy", e.get("f1"))) for e in dev_entries(row)]
