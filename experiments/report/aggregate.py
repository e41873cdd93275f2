"""Every table and plot of a study's finished runs (`python experiments/study.py --aggregate SOURCE ...`).

Reads each run's result, log and placement (`experiments.records`: run folders or their compacted runs.jsonl.gz)
and writes one JSON per run, table.md (test accuracy mean +- std over seeds; time, memory, late train loss and work
per method), speed.md, dev_curves.png, and where the study has them selected.md (grid points chosen on dev),
prompts.md (spread over templates), speedup.md and pareto.png (wall-clock to the reference method's final dev
accuracy, against peak memory), speedup_work.md (the same on training work, which does not depend on how many runs
shared the GPU); paired.md when asked (one method against every other, paired by task and seed).

A method with grid points (`name@lr0.0001`, ...) is one family, `name`; a plain `name` run beside them (in any
task) is one more point of it. table.md, the curves, speedup.md and pareto.png show a family as one method, per task
its point with the best mean dev accuracy over seeds; a tie goes to the study's starting point (the run name without
a grid suffix), then to the smaller grid values (`selection.point_order`). selected.md says which point that was per
task and has every point's test accuracy.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from experiments.report.plots import plot_curves, plot_pareto
from experiments.report.runs import WORK, Sources, read_sources, rows_of
from experiments.report.speedup import (
    ACROSS_NOTE,
    BEST_NOTE,
    WORK_NOTE,
    seeds_unpaired,
    speedup_table,
    speedups,
)
from experiments.report.tables import markdown, paired_comparison, prompt_spread, selected_on_dev


def gpu_sharing(sources: Sources) -> dict[str, float]:
    """Per run: the mean number of runs on its GPU while it ran, itself included (time-weighted), from the start
    and end study.py records in placement.json, over every run of ``sources`` (runs of several studies that ran at
    once count too); runs without both times are left out."""
    spans = {}
    for record in (r for _, records in sources for r in records if r.get("placement") is not None):
        placement = record["placement"]
        if placement.get("ended", 0) > placement.get("started", float("inf")):
            spans[record["name"]] = (placement["device"], placement["started"], placement["ended"])

    def overlap(a: tuple, b: tuple) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[1], b[1])) if a[0] == b[0] else 0.0

    return {name: sum(overlap(span, other) for other in spans.values()) / (span[2] - span[1])
            for name, span in spans.items()}


def step_speed(records: list[dict], sharing: dict[str, float] | None = None) -> str:
    """Steps reached and median seconds per step of every run with a log, finished or not, the runs that shared
    its GPU (`gpu_sharing`), where known, and why an unfinished one stopped (`records.failure_of`)."""
    sharing = sharing or {}
    lines = ["| run | finished | steps logged | median seconds / step | runs on its GPU (mean) | why it stopped |",
             "|---|---|---|---|---|---|"]
    for record in (r for r in records if r["log"] is not None):
        train = [e for e in record["log"] if "step_seconds" in e]
        median = f"{statistics.median(e['step_seconds'] for e in train):.3f}" if train else "-"
        done, name = record["result"] is not None, record["name"]
        shared = f"{sharing[name]:.1f}" if name in sharing else "-"
        why = "" if done else record.get("failure", "no error in its output")
        lines.append(f"| {name} | {'yes' if done else 'no'} | {train[-1]['step'] if train else 0} | "
                     f"{median} | {shared} | {why} |")
    return "\n".join(lines) + "\n"


def aggregate(out: Path | list[Path], results: Path, curve_methods: list[str], reference: str = "mezo",
              paired: str | None = None, select_seeds: list[int] | None = None, reruns: bool = False) -> None:
    """Every table and plot of the runs in `out` (run folders or their records, `records.read`); `select_seeds`:
    grid points are chosen on the dev accuracy of these seeds only (e.g. [0] when a grid ran on seed 0 and its first
    choice on three seeds); `reruns`: see `runs.rows_of`."""
    sources = read_sources(*(out if isinstance(out, list) else [out]))
    rows = rows_of(sources, reruns=reruns)
    for row in rows:
        row["selects"] = select_seeds is None or row["seed"] in select_seeds
    results.mkdir(parents=True, exist_ok=True)
    sharing = gpu_sharing(sources)
    speed = "".join(step_speed(records, sharing) for _, records in sources)
    (results / "speed.md").write_text(speed)
    if not rows:
        print(speed)
        return
    write_tables(rows, results, curve_methods, paired)
    write_speedups(rows, results, curve_methods, reference)
    print(markdown(rows))


def write_tables(rows: list[dict], results: Path, curve_methods: list[str], paired: str | None) -> None:
    """One JSON per run (its result, config last), table.md, dev_curves.png, and selected.md, prompts.md and
    paired.md where the runs have grid points, templates, or a method to pair with."""
    for row in rows:
        slim = {k: v for k, v in row["result"].items() if k != "config"}
        slim["config"] = row["result"]["config"]
        (results / f"{row['task']}__{row['method']}__s{row['seed']}.json").write_text(json.dumps(slim, indent=1))
    (results / "table.md").write_text(markdown(rows))
    plot_curves(rows, results / "dev_curves.png", curve_methods)
    if any("@" in r["method"] for r in rows):
        (results / "selected.md").write_text(selected_on_dev(rows))
    if any("@" in r["task"] for r in rows):
        (results / "prompts.md").write_text(prompt_spread(rows))
    if paired:
        (results / "paired.md").write_text(paired_comparison(rows, paired))


def write_speedups(rows: list[dict], results: Path, curve_methods: list[str], reference: str) -> None:
    """speedup.md / .json and pareto.png (to the reference's final dev), speedup_best.md (to its best),
    speedup_work.md (on training work) and speedup_across_seeds.md where methods ran on other seeds than it."""
    found = speedups(rows, reference, curve_methods)
    if found:
        (results / "speedup.md").write_text(speedup_table(found, reference))
        (results / "speedup.json").write_text(json.dumps(found, indent=1))
        plot_pareto(rows, found, results / "pareto.png")
        best = speedups(rows, reference, curve_methods, "best")  # a secondary view: to the reference's best
        (results / "speedup_best.md").write_text(BEST_NOTE + speedup_table(best, reference))
        on_work = speedups(rows, reference, curve_methods, clock=WORK)  # the same, free of the GPU's sharing
        if on_work:
            (results / "speedup_work.md").write_text(WORK_NOTE + speedup_table(on_work, reference))
    if seeds_unpaired(rows, reference, curve_methods):  # e.g. an ablation run on one seed of the reference's three
        across = speedups(rows, reference, curve_methods, across_seeds=True)
        across_work = speedups(rows, reference, curve_methods, clock=WORK, across_seeds=True)
        work = f"\n## On training work\n\n{WORK_NOTE}{speedup_table(across_work, reference)}" if across_work else ""
        (results / "speedup_across_seeds.md").write_text(ACROSS_NOTE + speedup_table(across, reference) + work)
