"""Where the gold answer sits among a BIG-bench task's choices: in task.json order, and as zofo shows them.

    python benchmarks/bigbench_positions.py                      # summary over ../shared/data/bigbench
    python benchmarks/bigbench_positions.py --all --out FILE.md  # and one line per task

A task's position share is the largest fraction of its examples whose gold is at one index (0 = first choice).
"in file" is the order of target_scores in task.json; "shown" the order the templates list and score them
(`zofo.tasks.bigbench.choice_order`). Chance is the share the most frequent index would get with every order
equally likely (sum over examples of 1 / n_options for index 0). Only tasks with some example of more than two
options count towards the summary, as in issue 31; `appended` says whether the task lists its choices in the
prompt (append_choices_to_input), else the order only decides which candidate wins a tie.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from zofo.tasks.bigbench import read_bigbench, shuffled

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bigbench"


def share(labels: list[int]) -> float:
    return max(Counter(labels).values()) / len(labels)


def task_row(file: Path, root: Path) -> dict:
    records = read_bigbench(file)[1]["train"]
    return {"task": str(file.parent.relative_to(root)), "n": len(records),
            "options": max(len(r["options"]) for r in records),
            "appended": bool(records[0]["format"]["append_choices_to_input"]),
            "file": share([r["label"] for r in records]), "shown": share([shuffled(r)[1] for r in records]),
            "chance": sum(1 / len(r["options"]) for r in records) / len(records)}


def summary(rows: list[dict]) -> list[str]:
    many = [r for r in rows if r["options"] > 2]
    leaky = [r for r in many if r["file"] > 0.9]
    top = max(many, key=lambda r: r["shown"])
    excess = max(many, key=lambda r: r["shown"] - r["chance"])
    return [f"{len(rows)} tasks, {len(many)} with some example of more than two options",
            f"in file order: {len(leaky)} of them have over 90% of their golds at one index "
            f"({sum(r['appended'] for r in leaky)} list their choices in the prompt): "
            + ", ".join(r["task"] for r in leaky),
            f"as shown: largest share {top['shown']:.3f} ({top['task']}, chance {top['chance']:.3f}); "
            f"largest excess over chance {excess['shown'] - excess['chance']:+.3f} ({excess['task']}, "
            f"{excess['n']} examples); tasks over 90%: {sum(r['shown'] > 0.9 for r in many)}"]


def table(rows: list[dict]) -> list[str]:
    lines = ["| task | examples | max options | appended | in file | shown | chance |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['n']} | {r['options']} | {'yes' if r['appended'] else 'no'} | {r['file']:.3f} | "
              f"{r['shown']:.3f} | {r['chance']:.3f} |" for r in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a folder of BIG-bench task folders")
    parser.add_argument("--all", action="store_true", help="also one line per task")
    parser.add_argument("--out", type=Path, help="write the report here as markdown")
    args = parser.parse_args()
    rows = [task_row(f, args.data) for f in sorted(args.data.rglob("task.json*"))]
    lines = summary(rows) + ([""] + table(rows) if args.all else [])
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(["# Gold positions in BIG-bench tasks (`benchmarks/bigbench_positions.py --all`)",
                                       "", *[f"- {s}" for s in lines[:3]], *lines[3:]]) + "\n")


if __name__ == "__main__":
    main()
