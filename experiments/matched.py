"""FO budgets matched to Bilevel ZOFO's own runs, per task (docs/RESULTS.md, "Protocol", budgets (a)-(c)):

    (a) steps    the first-order steps Bilevel ZOFO took on its deployed adapter: steps x bilevel.lower_steps
    (b) rows     the rows it put through the model (`work.forward_rows`, a forward-backward counted once), divided by
                 the FO method's rows a step on the same task (from any FO run of that task in the records)
    (c) seconds  its training time without evaluations (`train_seconds_without_evaluation`), from its runs that had
                 the card to themselves: the time-weighted mean of runs on their GPU at most `ALONE`, computed from the
                 start and end of every run in RECORDS (`gpu_sharing`; give the records of everything that ran beside
                 them). Runs shared with others are left out of it, and a task without a run alone gets no budget (c).

    python experiments/matched.py RECORDS... --bilevel bilevel-zofo-lora@lr_upper1e-04 --fo fo-lora [--out FILE]

RECORDS: compacted records (`runs.jsonl.gz`) or folders of run folders. Means over the Bilevel runs' seeds. Prints a
table and writes (to --out, else stdout) the overrides per task and budget as YAML, for a study's `set`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import yaml

from experiments.records import read
from experiments.report.aggregate import gpu_sharing

#: a run had the card to itself when the time-weighted mean number of runs on its GPU, itself included, is at most this
ALONE = 1.05


def runs_of(records: list[dict], task: str, point: str) -> list[dict]:
    """Finished runs (named TASK__METHOD[@GRID]__sSEED) of `task` at `point` (METHOD@GRID), or at any point of
    method `point` when it names no grid point."""
    found = []
    for r in records:
        name, _, rest = r["name"].partition("__")
        method_point = rest.rpartition("__")[0]
        same = method_point == point if "@" in point else method_point.split("@")[0] == point
        if name == task and same and "result" in r:
            found.append(r)
    return found


def matched(records: list[dict], task: str, bilevel: str, fo: str) -> dict | None:
    """{steps, rows, seconds} FO budgets for `task`, or None when either method has no run of it; ``seconds`` is
    None when none of Bilevel ZOFO's runs had the card to itself (`alone`)."""
    ours, theirs = runs_of(records, task, bilevel), runs_of(records, task, fo)
    if not ours or not theirs:
        return None
    rows_a_step = statistics.mean(r["result"]["work"]["forward_rows"] / r["result"]["steps"] for r in theirs)
    lower = [r["result"]["config"]["bilevel"]["lower_steps"] for r in ours]
    solo = alone(records, ours)
    return {
        "steps": round(statistics.mean(r["result"]["steps"] * k for r, k in zip(ours, lower, strict=True))),
        "rows": round(statistics.mean(r["result"]["work"]["forward_rows"] for r in ours) / rows_a_step),
        "seconds": round(statistics.mean(r["result"]["train_seconds_without_evaluation"] for r in solo), 1)
        if solo else None,
        "bilevel_runs": len(ours),
        "alone_runs": len(solo),
    }


def alone(records: list[dict], runs: list[dict]) -> list[dict]:
    """Those of ``runs`` that had their GPU to themselves, by the start and end times of every run in ``records``;
    a run without both times is not known to have been alone, so it is not."""
    sharing = gpu_sharing([(None, records)])
    return [r for r in runs if sharing.get(r["name"], math.inf) <= ALONE]


def overrides(budgets: dict[str, dict]) -> dict[str, dict]:
    """Per task, each budget as the config keys a study run sets (a time budget leaves the steps unbounded)."""
    return {task: {"steps": {"train.steps": b["steps"]}, "rows": {"train.steps": b["rows"]}}
            | ({"seconds": {"train.max_train_seconds": b["seconds"], "train.steps": 1_000_000}}
               if b["seconds"] is not None else {})
            for task, b in budgets.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", type=Path)
    ap.add_argument("--bilevel", required=True, help="Bilevel ZOFO's point, e.g. bilevel-zofo-lora@lr_upper1e-04")
    ap.add_argument("--fo", required=True, help="the FO method (any of its points gives its rows a step)")
    ap.add_argument("--out", type=Path, help="YAML file of the overrides (default: stdout)")
    args = ap.parse_args(argv)
    records = [r for source in args.records for r in read(source)]
    tasks = sorted({r["name"].split("__")[0] for r in records})
    budgets = {t: b for t in tasks if (b := matched(records, t, args.bilevel, args.fo.split("@")[0])) is not None}
    if not budgets:
        print(f"no task has runs of both {args.bilevel} and {args.fo}", file=sys.stderr)
        return 1
    print("| task | Bilevel runs (alone) | (a) FO steps | (b) FO steps, rows matched | (c) seconds |\n"
          "|---|---|---|---|---|")
    for task, b in budgets.items():
        seconds = "-" if b["seconds"] is None else b["seconds"]
        print(f"| {task} | {b['bilevel_runs']} ({b['alone_runs']}) | {b['steps']} | {b['rows']} | {seconds} |")
    if shared := [task for task, b in budgets.items() if b["seconds"] is None]:
        print(f"\nno budget (c) for {', '.join(shared)}: none of Bilevel ZOFO's runs there had the GPU to itself "
              f"(at most {ALONE} runs on it, time-weighted, by the start and end times in these records); run "
              f"{args.bilevel} alone (study.py --parallel 1) and give its records too\n")
    text = yaml.safe_dump(overrides(budgets), sort_keys=True)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
