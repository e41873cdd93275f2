"""The meta-learning study's comparison: every meta-tested backbone side by side, paired over the held-out tasks.

    python -m experiments.meta_compare OUT --reference bilevel-zofo-s0 [--results DIR]

OUT is a folder as `experiments/meta_study.sh` leaves it (OUT/train/<name>/result.json, OUT/test/<name>/units/
<task>/seed<s>.json, OUT/test/base/...), or the same files unpacked from its records. Per setting (zero-shot, ICL,
k-shot LoRA) the table holds each backbone's accuracy per task (mean over the seeds of the k-shot sample) and the mean
over tasks; then the reference backbone minus each other one, per task, as mean ± standard error over the tasks (a
difference within one standard error is a tie). Only the (task, seed) units every backbone finished count: a
meta-test stopped early leaves either some tasks or its last seed out (`common_tasks`), and the table says which.
The training cost of each trained backbone (steps, sequences, seconds, peak memory) comes from its result.json.
Writes meta_compare.md, meta_compare.json and meta_compare.png (each backbone's mean k-shot LoRA accuracy against
its meta-training seconds; the base model at 0) to --results (default: print the markdown).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SETTINGS = {"zero_shot": "zero-shot", "icl": "ICL k=16", "peft": "LoRA k=16"}


def units(test_dir: Path) -> dict[str, dict[int, dict]]:
    """task -> seed -> the unit's result, for one meta-tested backbone."""
    found: dict[str, dict[int, dict]] = {}
    for file in sorted(test_dir.glob("units/*/seed*.json")):
        unit = json.loads(file.read_text())
        found.setdefault(unit["task"], {})[unit["seed"]] = unit
    return found


def score(unit: dict, setting: str) -> float:
    metrics = unit[setting]
    return metrics["accuracy"] if "accuracy" in metrics else metrics["f1"]


def common_tasks(by_backbone: dict[str, dict[str, dict[int, dict]]]) -> tuple[list[str], list[int]]:
    """The tasks and seeds compared: every backbone must have finished each (task, seed). Of the two ways to cut what
    stopped meta-tests left (fewer tasks with every seed, or every task every backbone started with the seeds all of
    them finished), the one with more units, then more tasks (meta-test runs the seeds one after the other over all
    the tasks, so a stopped one leaves the last seed short)."""
    seeds = sorted({seed for b in by_backbone.values() for by_seed in b.values() for seed in by_seed})
    started = set.intersection(*(set(b) for b in by_backbone.values()))
    every_seed = {t for t in started if all(set(seeds) <= set(b[t]) for b in by_backbone.values())}
    whole_seeds = [s for s in seeds if all(s in b[t] for b in by_backbone.values() for t in started)]
    tasks, seeds = max([(every_seed, seeds), (started, whole_seeds)],
                       key=lambda cut: (len(cut[0]) * len(cut[1]), len(cut[0])))
    order = next(iter(by_backbone.values()))
    return [t for t in order if t in tasks], seeds


def paired(a: list[float], b: list[float]) -> dict:
    """mean ± standard error of a - b over the tasks, and whether it is a tie (within one standard error)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("inf")
    return {"mean": mean, "se": se, "n": len(diffs), "tie": abs(mean) <= se,
            "ahead": sum(d > 0 for d in diffs), "behind": sum(d < 0 for d in diffs)}


def training_cost(train_dir: Path) -> dict:
    result = json.loads((train_dir / "result.json").read_text())
    peaks = result.get("peak_memory_mib") or {}
    work = result.get("work", {})
    return {"method": result.get("method"), "steps": result.get("steps"),
            "train_seconds": result.get("train_seconds_without_evaluation"),
            "forward_rows": work.get("forward_rows"), "backward_rows": work.get("backward_rows"),
            "peak_train_mib": round(peaks["train_step"], 1) if "train_step" in peaks else None,
            **dev_ends(train_dir, result)}


def dev_ends(train_dir: Path, result: dict) -> dict:
    """The dev accuracy before and after meta-training: a bilevel run's result says it (mean over the tasks, backbone
    alone); a pooled baseline's (`zofo train` on the pooled stream: mean over the pooled dev examples, adapter on)
    is its log's first and last dev entry."""
    if "dev_first" in result:
        return {"dev_first": result["dev_first"], "dev_last": result.get("dev_last")}
    log = train_dir / "log.jsonl"
    devs = [row for row in map(json.loads, log.read_text().splitlines() if log.is_file() else [])
            if row.get("phase") == "dev" and "accuracy" in row]
    return {"dev_first": devs[0]["accuracy"] if devs else None, "dev_last": devs[-1]["accuracy"] if devs else None}


def compare(out: Path, reference: str) -> dict:
    names = sorted(p.name for p in (out / "test").iterdir() if (p / "units").is_dir())
    by_backbone = {name: units(out / "test" / name) for name in names}
    if reference not in by_backbone:
        raise SystemExit(f"no meta-test of {reference!r} under {out / 'test'} (have: {', '.join(names)})")
    tasks, seeds = common_tasks(by_backbone)
    if not tasks:
        raise SystemExit("no task was finished by every backbone for every seed")
    acc = {s: {b: {t: statistics.fmean(score(by_backbone[b][t][seed], s) for seed in seeds) for t in tasks}
               for b in names} for s in SETTINGS}
    diffs = {s: {b: paired([acc[s][reference][t] for t in tasks], [acc[s][b][t] for t in tasks])
                 for b in names if b != reference} for s in SETTINGS}
    costs = {b: training_cost(out / "train" / b) for b in names if (out / "train" / b / "result.json").is_file()}
    return {"reference": reference, "tasks": tasks, "seeds": seeds, "backbones": names,
            "all_tasks": {b: len(u) for b, u in by_backbone.items()}, "accuracy": acc, "paired": diffs,
            "training": costs}


def markdown(report: dict) -> str:
    names, tasks, ref = report["backbones"], report["tasks"], report["reference"]
    lines = [f"{len(tasks)} held-out tasks finished by every backbone for seeds {report['seeds']} of the k-shot "
             "sample (tasks finished per backbone: " + ", ".join(f"{b} {n}" for b, n in report["all_tasks"].items())
             + ").", ""]
    for setting, title in SETTINGS.items():
        acc = report["accuracy"][setting]
        lines += [f"### {title}", "", "| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {t} | " + " | ".join(f"{acc[b][t]:.3f}" for b in names) + " |" for t in tasks]
        lines.append("| **mean** | " + " | ".join(f"**{statistics.fmean(acc[b].values()):.3f}**" for b in names)
                     + " |")
        lines += ["", f"{ref} minus each (points, mean ± s.e. over {len(tasks)} tasks):", ""]
        for other, d in report["paired"][setting].items():
            side = "ahead" if d["mean"] > 0 else "behind"
            verdict = "tie" if d["tie"] else side if d["se"] == 0 else f"{abs(d['mean']) / d['se']:.1f} s.e. {side}"
            lines.append(f"- vs {other}: {100 * d['mean']:+.1f} ± {100 * d['se']:.1f} ({verdict}; "
                         f"{d['ahead']} tasks ahead, {d['behind']} behind)")
        lines.append("")
    if report["training"]:
        lines += ["### Meta-training cost", "", "| backbone | method | outer steps | seconds (training) | forward "
                  "rows | backward rows | peak train MiB | dev before | dev after |", "|---|" + "---|" * 8]
        for b, c in report["training"].items():
            lines.append(f"| {b} | {c['method']} | {c['steps']} | {c['train_seconds']} | {c['forward_rows']} | "
                         f"{c['backward_rows']} | {c['peak_train_mib']} | {c['dev_first']} | {c['dev_last']} |")
        lines += ["", "Dev before and after (`dev_ends`): a bilevel run's mean over the meta-train tasks, backbone "
                  "alone; a pooled baseline's mean over its pooled dev examples, adapter on."]
    return "\n".join(lines) + "\n"


def plot(report: dict, target: Path) -> None:
    """Mean meta-test accuracy (k-shot LoRA, over the common tasks) against meta-training seconds, one point per
    backbone (a backbone without a training record, the base model, at 0 s), with its standard error over tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for name in report["backbones"]:
        scores = list(report["accuracy"]["peft"][name].values())
        seconds = (report["training"].get(name) or {}).get("train_seconds") or 0.0
        se = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else 0.0
        axis.errorbar([seconds], [statistics.fmean(scores)], yerr=[se], fmt="o", capsize=3, label=name)
    axis.set_xlabel("meta-training seconds (training only)")
    axis.set_ylabel(f"meta-test accuracy, LoRA k=16 (mean of {len(report['tasks'])} tasks)")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--reference", default="bilevel-zofo-s0")
    p.add_argument("--results", type=Path, default=None)
    args = p.parse_args(argv)
    report = compare(args.out, args.reference)
    text = markdown(report)
    if args.results is None:
        print(text)
        return
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "meta_compare.md").write_text(text)
    (args.results / "meta_compare.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.results / "meta_compare.png")


if __name__ == "__main__":
    main()
