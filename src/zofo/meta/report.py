"""The meta-test table: per task, each setting's metric as mean ± standard deviation over the seeds of the k-shot
sample, and the mean over tasks; written as JSON (every seed's numbers too) and as markdown.

The metric is accuracy for classification and multiple choice, F1 for generation. The standard deviation is the
sample one (n - 1; 0 for one seed). The mean row is the mean of the task means; its ± is the standard deviation
over seeds of the per-seed means over tasks (seed s of every task)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

SETTINGS = ("zero_shot", "icl", "peft")


def _metric(metrics: dict) -> str:
    return "accuracy" if "accuracy" in metrics else "f1"


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": values}


def summarise(results: list[dict], names: list[str], header: dict) -> dict:
    """The report of the unit results (one per task and seed) of the tasks `names`, in that order."""
    by_task = {name: [r for r in results if r["task"] == name] for name in names}
    tasks = []
    for name, runs in by_task.items():
        metric = _metric(runs[0]["zero_shot"])
        row = {"task": name, "metric": metric, "n_test": runs[0]["sizes"]["test"]}
        row |= {s: _spread([r[s][metric] for r in runs]) for s in SETTINGS}
        row["peft_best_steps"] = [r["peft_run"]["best_step"] for r in runs]
        tasks.append(row)
    seeds = len(tasks[0]["zero_shot"]["seeds"])
    mean = {s: {"mean": statistics.fmean(t[s]["mean"] for t in tasks),
                "std": _spread([statistics.fmean(t[s]["seeds"][i] for t in tasks) for i in range(seeds)])["std"]}
            for s in SETTINGS}
    return {**header, "tasks": tasks, "mean": mean, "units": results}


def columns(report: dict) -> list[str]:
    k = report["protocol"]["shots"]
    return ["task", "metric", "n_test", "zero-shot", f"ICL k={k}", f"LoRA k={k}"]


def rows(report: dict) -> list[list[str]]:
    """The table's cells: one row per task, then the mean over tasks."""
    cell = "{mean:.3f} ± {std:.3f}".format
    out = [[t["task"], t["metric"], str(t["n_test"]), *(cell(**t[s]) for s in SETTINGS)] for t in report["tasks"]]
    out.append([f"mean ({len(report['tasks'])} tasks)", "", "", *(cell(**report["mean"][s]) for s in SETTINGS)])
    return out


def table_text(report: dict) -> str:
    """The table for a terminal, columns aligned."""
    cells = [columns(report), *rows(report)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def table_markdown(report: dict) -> str:
    seeds, backbone = report["protocol"]["seeds"], report["backbone"]["model"]
    lines = [f"Meta-test of `{backbone}`: mean ± std over seeds {seeds} of the k-shot sample.", "",
             "| " + " | ".join(columns(report)) + " |", "|" + "---|" * len(columns(report))]
    lines += ["| " + " | ".join(row) + " |" for row in rows(report)]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path) -> None:
    (out_dir / "meta_test.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "meta_test.md").write_text(table_markdown(report))
