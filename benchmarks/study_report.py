"""Tables and plots of a study's finished runs (`python benchmarks/study.py --aggregate DIR`).

Reads every run folder's result.json and log.jsonl and writes one JSON per run, table.md (test accuracy mean
+- std over seeds; time, memory, late train loss and work per method), speed.md, dev_curves.png, and where the
study has them selected.md (grid points chosen on dev), prompts.md (spread over templates), speedup.md and
pareto.png (wall-clock to the reference method's final dev accuracy, against peak memory).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def load_runs(*outs: Path) -> list[dict]:
    """Every finished run in the run folders under `outs` (studies of several sessions can be pooled; a run
    name found twice is an error, not a silent overwrite)."""
    rows, seen = [], {}
    for result in sorted(r for out in outs for r in out.glob("*/result.json")):
        name, folder = result.parent.name, result.parent.parent
        if name in seen:
            raise ValueError(f"run {name} is in both {seen[name]} and {folder}: pool studies whose runs differ")
        seen[name] = folder
        data = json.loads(result.read_text())
        task, method, seed = result.parent.name.split("__")
        log = [json.loads(line) for line in (result.parent / "log.jsonl").read_text().splitlines()]
        rows.append({"task": task, "method": method, "seed": int(seed[1:]), "result": data, "log": log})
    return rows


def metric_of(result: dict) -> float:
    test = result["test"]
    return test.get("accuracy", test.get("f1"))


def accuracy_table(rows: list[dict]) -> tuple[list[str], list[str], dict]:
    """{(method, task): (mean, std, n)} of test accuracy over seeds."""
    cells = {(m, t): v for (t, m), v in _seed_values(rows, lambda r: metric_of(r["result"])).items()}
    methods = sorted({m for m, _ in cells}, key=lambda m: [r["method"] for r in rows].index(m))
    tasks = sorted({t for _, t in cells})
    stats = {k: (statistics.mean(v), statistics.pstdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in cells.items()}
    return methods, tasks, stats


def markdown(rows: list[dict]) -> str:
    methods, tasks, stats = accuracy_table(rows)
    lines = ["| method | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
    for method in methods:
        cells, means = [], []
        for task in tasks:
            if (method, task) in stats:
                mean, std, n = stats[(method, task)]
                means.append(mean)
                cells.append(f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}")
            else:
                cells.append("-")
        overall = f"{statistics.mean(means):.3f}" if len(means) == len(tasks) else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {overall} |")
    lines += ["", "| method | train seconds (mean) | peak train-step memory MiB (max) | steps (min-max) | "
              "median seconds / step | train loss, last sixth of the steps (mean over seeds) | "
              "sequences forward / backward, thousands (mean) |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        seconds = statistics.mean(r["result"]["train_seconds"] for r in mine)
        peaks = [r["result"]["peak_memory_mib"].get("train_step", 0.0) for r in mine]
        steps = [r["result"]["steps"] for r in mine]
        step_seconds = [e["step_seconds"] for r in mine for e in r["log"] if "step_seconds" in e]
        median = f"{statistics.median(step_seconds):.3f}" if step_seconds else "-"
        tails = [v for v in (late_train_loss(r) for r in mine) if v is not None]
        late = f"{statistics.mean(tails):.4f}" if tails else "-"
        lines.append(f"| {method} | {seconds:.1f} | {max(peaks):.0f} | {min(steps)}-{max(steps)} | {median} | "
                     f"{late} | {passes(mine)} |")
    return "\n".join(lines) + "\n"


def passes(rows: list[dict]) -> str:
    """Mean sequences through the model forward / backward in training (result.json's work), in thousands."""
    work = [r["result"]["work"] for r in rows if "work" in r["result"]]
    if not work:
        return "-"
    fwd, bwd = (statistics.mean(w[k] for w in work) / 1000 for k in ("forward_rows", "backward_rows"))
    return f"{fwd:.1f} / {bwd:.1f}"


def late_train_loss(row: dict) -> float | None:
    """Mean logged training loss over the last sixth of a run's steps (less noisy than one test accuracy)."""
    train = [e for e in row["log"] if e.get("phase") == "train" and "loss" in e]
    if not train:
        return None
    last = max(e["step"] for e in train)
    tail = [e["loss"] for e in train if e["step"] > last * 5 / 6]
    return statistics.mean(tail) if tail else None


def base(name: str) -> str:
    """A grid point's or template's family: the part before '@'."""
    return name.split("@", 1)[0]


def _seed_values(rows: list[dict], value) -> dict[tuple[str, str], list[float]]:
    """{(task, method): [value(row) of each seed's run]}."""
    cells: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        cells.setdefault((row["task"], row["method"]), []).append(value(row))
    return cells


def selected_on_dev(rows: list[dict]) -> str:
    """Per (task, method family): the grid point with the best mean dev accuracy, and its test accuracy."""
    dev = _seed_values(rows, lambda r: r["result"]["best_dev"])
    test = _seed_values(rows, lambda r: metric_of(r["result"]))
    best: dict[tuple[str, str], str] = {}
    for (task, method), values in dev.items():
        key = (task, base(method))
        if key not in best or statistics.mean(values) > statistics.mean(dev[(task, best[key])]):
            best[key] = method
    lines = ["| task | method | chosen on dev | points in the grid | dev (mean) | test (mean ± std) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for (task, family), method in sorted(best.items()):
        n_points = sum(1 for t, m in dev if t == task and base(m) == family)
        t = test[(task, method)]
        std = statistics.pstdev(t) if len(t) > 1 else 0.0
        lines.append(f"| {task} | {family} | {method} | {n_points} | {statistics.mean(dev[(task, method)]):.3f} | "
                     f"{statistics.mean(t):.3f} ± {std:.3f} | {len(t)} |")
    return "\n".join(lines) + "\n"


def prompt_spread(rows: list[dict]) -> str:
    """Per (method, task): test accuracy under each template (mean over seeds) and max - min."""
    test = _seed_values(rows, lambda r: metric_of(r["result"]))
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for (task, method), values in test.items():
        if "@" in task:
            family, template = task.split("@", 1)
            cells.setdefault((method, family), {})[template] = statistics.mean(values)
    lines = ["| method | task | test accuracy per template | spread (max - min) |", "|---|---|---|---|"]
    for (method, task), per in sorted(cells.items()):
        shown = ", ".join(f"{t} {v:.3f}" for t, v in sorted(per.items()))
        lines.append(f"| {method} | {task} | {shown} | {max(per.values()) - min(per.values()):.3f} |")
    return "\n".join(lines) + "\n"


def dev_curve(row: dict) -> list[tuple[float, float]]:
    """(wall-clock seconds, dev accuracy) of every evaluation of a run."""
    return [(e["time"], e.get("accuracy", e.get("f1"))) for e in row["log"] if e.get("phase") == "dev"]


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """First wall-clock second at which the dev accuracy reaches ``target`` (None: never)."""
    return next((t for t, acc in curve if acc >= target - 1e-12), None)


def speedups(rows: list[dict], reference: str, methods: list[str]) -> list[dict]:
    """Per (task, seed, method): seconds to the reference's final dev accuracy and the reference's own time
    to it (the first evaluation at or above its final value) divided by that. No speed-up is defined where
    the reference ended no higher than its first evaluation (it learned nothing: any method "reaches" it at
    once); `reference_improved` says which."""
    found = []
    for ref in (r for r in rows if r["method"] == reference):
        curve = dev_curve(ref)
        if not curve:
            continue
        target = curve[-1][1]
        t_ref = time_to(curve, target)
        improved = target > curve[0][1] + 1e-12
        for row in rows:
            if row["task"] == ref["task"] and row["seed"] == ref["seed"] and row["method"] in methods:
                t = time_to(dev_curve(row), target)
                found.append({"task": row["task"], "seed": row["seed"], "method": row["method"], "target": target,
                              "seconds": t, "reference_seconds": t_ref, "reference_improved": improved,
                              "speedup": t_ref / t if t and t_ref and improved else None})
    return found


def speedup_table(found: list[dict], reference: str) -> str:
    lines = [f"| task | seed | {reference}'s final dev | method | seconds to it | {reference}'s seconds | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for f in found:
        secs = f"{f['seconds']:.0f}" if f["seconds"] is not None else "not reached"
        gain = f"{f['speedup']:.2f}x" if f["speedup"] else "-"
        if not f.get("reference_improved", True):
            gain = f"- ({reference} never rose above its first evaluation)"
        lines.append(f"| {f['task']} | {f['seed']} | {f['target']:.3f} | {f['method']} | {secs} | "
                     f"{f['reference_seconds']:.0f} | {gain} |")
    return "\n".join(lines) + "\n" + speedup_summary(found, reference)


def speedup_summary(found: list[dict], reference: str) -> str:
    """Per task and method: the speed-ups of the seeds where one is defined, their mean, and the seeds left."""
    lines = ["", f"| task | method | speed-up per seed | mean | seeds without one ({reference} flat / not reached) |",
             "|---|---|---|---|---|"]
    for task, method in sorted({(f["task"], f["method"]) for f in found if f["method"] != reference}):
        cell = [f for f in found if (f["task"], f["method"]) == (task, method)]
        gains = [f["speedup"] for f in cell if f["speedup"]]
        flat = sum(not f.get("reference_improved", True) for f in cell)
        missed = sum(f["seconds"] is None and f.get("reference_improved", True) for f in cell)
        shown = ", ".join(f"{g:.1f}x" for g in gains) or "-"
        mean = f"{statistics.mean(gains):.1f}x" if gains else "-"
        lines.append(f"| {task} | {method} | {shown} | {mean} | {flat} / {missed} |")
    return "\n".join(lines) + "\n"


def plot_pareto(rows: list[dict], found: list[dict], target: Path) -> None:
    """Per task: mean seconds to the reference's final dev accuracy against peak train-step memory, one point
    per method (seeds whose reference never improved are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({f["task"] for f in found if f["speedup"]}) or sorted({f["task"] for f in found})
    methods = sorted({f["method"] for f in found})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for color, method in enumerate(methods):
            times = [f["seconds"] for f in found if (f["task"], f["method"]) == (task, method)
                     and f["seconds"] is not None and f.get("reference_improved", True)]
            peaks = [r["result"]["peak_memory_mib"].get("train_step", 0.0) for r in rows
                     if (r["task"], r["method"]) == (task, method)]
            if times and peaks:
                axis.scatter(statistics.mean(times), max(peaks), color=f"C{color}")
                axis.annotate(method, (statistics.mean(times), max(peaks)), fontsize=8)
        axis.set_title(task)
        axis.set_xlabel("seconds to the reference's final dev accuracy (mean)")
        axis.set_ylabel("peak train-step memory (MiB)")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def plot_curves(rows: list[dict], target: Path, methods: list[str]) -> None:
    """Dev accuracy against wall-clock seconds, one panel per task, mean curve per method (seed 0 shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for row in rows:
            if row["task"] != task or row["method"] not in methods or row["seed"] != 0:
                continue
            curve = dev_curve(row)
            axis.plot([t for t, _ in curve], [acc for _, acc in curve], marker=".", label=row["method"])
        axis.set_title(task)
        axis.set_xlabel("wall-clock seconds")
        axis.set_ylabel("dev accuracy")
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def step_speed(out: Path) -> str:
    """Steps reached and median seconds per step of every run folder, finished or not (from log.jsonl)."""
    lines = ["| run | finished | steps logged | median seconds / step |", "|---|---|---|---|"]
    for log in sorted(out.glob("*/log.jsonl")):
        train = [e for e in map(json.loads, log.read_text().splitlines()) if "step_seconds" in e]
        median = f"{statistics.median(e['step_seconds'] for e in train):.3f}" if train else "-"
        done = (log.parent / "result.json").exists()
        lines.append(f"| {log.parent.name} | {'yes' if done else 'no'} | {train[-1]['step'] if train else 0} | "
                     f"{median} |")
    return "\n".join(lines) + "\n"


def aggregate(out: Path | list[Path], results: Path, curve_methods: list[str], reference: str = "mezo") -> None:
    outs = out if isinstance(out, list) else [out]
    rows = load_runs(*outs)
    results.mkdir(parents=True, exist_ok=True)
    speed = "".join(step_speed(o) for o in outs)
    (results / "speed.md").write_text(speed)
    if not rows:
        print(speed)
        return
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
    found = speedups(rows, reference, curve_methods)
    if found:
        (results / "speedup.md").write_text(speedup_table(found, reference))
        (results / "speedup.json").write_text(json.dumps(found, indent=1))
        plot_pareto(rows, found, results / "pareto.png")
    print(markdown(rows))
