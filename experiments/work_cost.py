"""How the speed-ups on training work depend on what a backward pass costs (issue 30, item 5).

    python experiments/work_cost.py experiments/results/gpu-2026-12-03/grids-edges3-runs76-78 \
        [--backward-cost 1 1.5 2] [--method bilevel-zofo-lora] [--out FILE.md]

The work clock of the study's tables (`speedup_work.md`) counts a backward pass as one forward. A backward through a
PEFT model computes activation gradients through every layer, and on the GPU it costs more than a forward: section 8
of docs/RESULTS.md puts a graphed FO-LoRA step (a forward and a backward) at 20.8 ms against 8.3 ms a perturbed
forward, so a backward at about 1.5 forwards or more. This reads a results folder's records as its aggregate does
(`results/aggregates.yaml`: its sources and options), recounts the work with each backward cost, and prints, per
task, the mean over seeds of the method's speed-up against the reference's final dev accuracy (seeds where it is
undefined left out, `n` says how many count; the mean, as the tables' summary `speedup_summary` gives
it), and how many tasks reach 4x on that mean.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.report.runs import WORK, add_work_clock, read_sources, rows_of  # noqa: E402
from experiments.report.speedup import speedups  # noqa: E402

AGGREGATES = Path(__file__).parent / "results" / "aggregates.yaml"


def rows_of_folder(folder: str, root: Path, aggregates: Path = AGGREGATES) -> tuple[list[dict], dict]:
    """The rows a results folder's aggregate reads, and its options."""
    specs = yaml.safe_load(aggregates.read_text())
    if folder not in specs:
        raise SystemExit(f"{folder}: not a results folder of {aggregates}; its folders look like {next(iter(specs))}")
    spec = specs[folder]
    options = spec.get("options", {})
    rows = rows_of(read_sources(*(root / s for s in spec["sources"])), options.get("reruns", False))
    selects = options.get("select-seeds")
    for row in rows:
        row["selects"] = selects is None or row["seed"] in selects
    return rows, options


def means(rows: list[dict], method: str, reference: str, backward_cost: float) -> dict[str, tuple[float, int]]:
    """{task: (mean speed-up over the seeds where it is defined, how many)} on work at this backward cost."""
    for row in rows:
        add_work_clock(row, backward_cost)
    found = [f for f in speedups(rows, reference, [method], clock=WORK) if f["speedup"] is not None]
    tasks = sorted({f["task"] for f in found})
    return {t: (statistics.mean(f["speedup"] for f in found if f["task"] == t),
                sum(f["task"] == t for f in found)) for t in tasks}


def table(per_cost: dict[float, dict[str, tuple[float, int]]], method: str, reference: str) -> str:
    costs = list(per_cost)
    tasks = sorted({t for found in per_cost.values() for t in found})
    lines = [f"{method} against {reference}'s final dev accuracy, on work; mean over seeds (n seeds defined)", "",
             "| task | " + " | ".join(f"backward = {c:g} forward" for c in costs) + " |",
             "|---|" + "---|" * len(costs)]
    for task in tasks:
        cells = [f"{per_cost[c][task][0]:.2f}x (n {per_cost[c][task][1]})" if task in per_cost[c] else "-"
                 for c in costs]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    reached = [sum(per_cost[c][t][0] >= 4 for t in per_cost[c]) for c in costs]
    lines.append("| tasks at 4x or more | " + " | ".join(f"{r} of {len(per_cost[c])}" for r, c in
                                                      zip(reached, costs, strict=True)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a results folder named in results/aggregates.yaml")
    parser.add_argument("--backward-cost", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--method", default="bilevel-zofo-lora")
    parser.add_argument("--root", type=Path, default=Path("."), help="where the paths in aggregates.yaml start")
    parser.add_argument("--aggregates", type=Path, default=AGGREGATES, help="the folders' sources and options")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows, options = rows_of_folder(args.folder.rstrip("/"), args.root, args.aggregates)
    reference = options.get("reference", "mezo")
    text = table({c: means(rows, args.method, reference, c) for c in args.backward_cost}, args.method, reference)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
