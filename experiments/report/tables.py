"""The markdown tables of a study: table.md (accuracy, time, memory, work), selected.md, prompts.md, paired.md."""

from __future__ import annotations

import statistics

from experiments.report.checks import GRID_CHECKS
from experiments.report.runs import _peak, _seed_values, base, metric_of, step_budget
from experiments.report.selection import grid_families, selection
from zofo.tasks import default_template


def accuracy_table(rows: list[dict]) -> tuple[list[str], list[str], dict]:
    """{(method, task): (mean, std, n)} of test accuracy over seeds, per run name (every grid point apart)."""
    cells = {(m, t): v for (t, m), v in _seed_values(rows, lambda r: metric_of(r["result"])).items()}
    methods = sorted({m for m, _ in cells}, key=lambda m: [r["method"] for r in rows].index(m))
    tasks = sorted({t for _, t in cells})
    stats = {k: (statistics.mean(v), statistics.pstdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in cells.items()}
    return methods, tasks, stats


def selected_table(rows: list[dict]) -> tuple[list[str], list[str], dict]:
    """`accuracy_table` with each grid family as one method: per task, its dev-selected point's cell."""
    methods, tasks, stats = accuracy_table(rows)
    chosen = selection(rows)
    names = list(dict.fromkeys(base(m) for m in methods))
    picked = {(f, t): stats[(c["point"], t)] for (t, f), c in chosen.items()}
    return names, tasks, picked


def accuracy_lines(methods: list[str], tasks: list[str], stats: dict) -> list[str]:
    """Markdown table of test accuracy, mean ± std per task; the mean of the task means where all tasks have one."""
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
    return lines


def selection_note(rows: list[dict]) -> list[str]:
    """Under the accuracy table: per grid family, the point used in each task, and the tasks with only one point."""
    chosen, lines = selection(rows), []
    for family in grid_families(rows):
        mine = sorted((t, c) for (t, f), c in chosen.items() if f == family)
        picks = [f"{t} {c['point']} (of {len(c['points'])}{', tie on dev' if len(c['tied']) > 1 else ''})"
                 for t, c in mine if len(c["points"]) > 1]
        single: dict[str, list[str]] = {}
        for t, c in mine:
            if len(c["points"]) == 1:
                single.setdefault(c["point"], []).append(t)
        lines.append(f"- `{family}`: per task the grid point with the best mean dev accuracy over seeds: "
                     + ("; ".join(picks) or "none") + ".")
        lines += [f"  Only one point run, nothing chosen: {p} on {', '.join(ts)}." for p, ts in single.items()]
    if lines:
        lines = ["", "Grid methods are one row each, per task the point selected on dev (selected.md has every "
                 "point); a tie on mean dev accuracy goes to the study's starting point (the name without a grid "
                 "suffix), then to the smaller grid values (e.g. the smaller learning rate):", *lines]
    return lines


def markdown(rows: list[dict]) -> str:
    lines = accuracy_lines(*selected_table(rows)) + selection_note(rows)
    lines += ["", "Per run name (each grid point apart):", "",
              "| method | train seconds (mean) | peak train-step memory MiB (max) | reserved by the process, MiB "
              "(max) | steps (min-max) | median seconds / step | train loss, last sixth of the steps (mean over "
              "seeds) | sequences forward / backward, thousands (mean) |", "|---|---|---|---|---|---|---|---|"]
    for method in accuracy_table(rows)[0]:
        mine = [r for r in rows if r["method"] == method]
        seconds = statistics.mean(r["result"]["train_seconds"] for r in mine)
        peaks = [_peak(r) for r in mine]
        steps = [r["result"]["steps"] for r in mine]
        step_seconds = [e["step_seconds"] for r in mine for e in r["log"] if "step_seconds" in e]
        median = f"{statistics.median(step_seconds):.3f}" if step_seconds else "-"
        tails = [v for v in (late_train_loss(r) for r in mine) if v is not None]
        late = f"{statistics.mean(tails):.4f}" if tails else "-"
        reserved = [r["result"].get("peak_memory_reserved_mib", {}).get("train_step") for r in mine]
        held = f"{max(v for v in reserved if v):.0f}" if any(reserved) else "-"  # runs before it was recorded: -
        lines.append(f"| {method} | {seconds:.1f} | {max(peaks):.0f} | {held} | {min(steps)}-{max(steps)} | "
                     f"{median} | {late} | {passes(mine)} |")
    return "\n".join(lines + cut_short_note(rows)) + "\n"


def cut_short_note(rows: list[dict]) -> list[str]:
    """The runs that a time cap stopped before their step budget, as '(steps reached of budget)'."""
    short = [(r, step_budget(r)) for r in rows if (step_budget(r) or 0) > r["result"]["steps"]]
    if not short:
        return []
    names = [f"{r['task']}__{r['method']}__s{r['seed']} ({r['result']['steps']} of {budget})" for r, budget in short]
    return ["", f"Stopped by a time cap before their step budget ({len(short)} of {len(rows)} runs): "
            + ", ".join(names) + "."]


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


def selected_on_dev(rows: list[dict]) -> str:
    """Per (task, grid family): the grid point with the best mean dev accuracy and its test accuracy (a cell with
    one point says that nothing was chosen), then every point's test accuracy."""
    test = _seed_values(rows, lambda r: metric_of(r["result"]))
    families = grid_families(rows)
    picked_on = sorted({r["seed"] for r in rows if r.get("selects", True)})
    lines = ["Per task and method with grid points: the point with the best mean dev accuracy over seeds "
             f"{', '.join(map(str, picked_on))} (a tie goes to the starting point, without a grid suffix, then to "
             "the smaller grid values, e.g. the smaller learning rate); test over every seed run.", "",
             "| task | method | chosen on dev | points in the grid | dev (mean) | test (mean ± std) | seeds | "
             "dev per point (mean) |", "|---|---|---|---|---|---|---|---|"]
    chosen = selection(rows)
    for (task, family), c in sorted(chosen.items()):
        if family not in families:
            continue
        point, t = c["point"], test[(task, c["point"])]
        shown = point if len(c["points"]) > 1 else f"- (only one point run: {point})"
        if len(c["tied"]) > 1:
            shown += f" (tie with {', '.join(c['tied'][1:])})"
        per = ", ".join(f"{p} {c['dev'][p]:.3f}" for p in c["points"])
        std = statistics.pstdev(t) if len(t) > 1 else 0.0
        lines.append(f"| {task} | {family} | {shown} | {len(c['points'])} | {c['dev'][point]:.3f} | "
                     f"{statistics.mean(t):.3f} ± {std:.3f} | {len(t)} | {per} |")
    for heading, check in GRID_CHECKS:
        found = check(rows, chosen, families)
        if found:
            lines += ["", heading, "", *found]
    methods, tasks, stats = accuracy_table(rows)
    lines += ["", "Test accuracy of every grid point:", "",
              *accuracy_lines([m for m in methods if base(m) in families], tasks, stats)]
    return "\n".join(lines) + "\n"


def template_of(row: dict) -> str | None:
    """The prompt template a run used: its config's data.template, else the `@template` of its task name, else
    its task's default template (a run of a study without templates); None where nothing says."""
    data = row["result"].get("config", {}).get("data", {})
    named = row["task"].partition("@")[2]
    if data.get("template") or named:
        return data.get("template") or named
    return default_template(data["task"]) if data.get("task") else None


def prompt_spread(rows: list[dict]) -> str:
    """Per (method, task) run under at least two templates: test accuracy under each and max - min, on the
    seeds that every template of that (method, task) ran (a template run on more seeds is not compared with
    one run on fewer). Runs of a study without templates count under their task's default template, so a
    study of the other templates alone completes the table. A last table gives each method's mean spread."""
    cells: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for row in rows:
        template = template_of(row)
        if template is not None:
            per = cells.setdefault((row["method"], row["task"].partition("@")[0]), {})
            per.setdefault(template, {})[row["seed"]] = metric_of(row["result"])
    lines = ["| method | task | seeds | test accuracy per template | spread (max - min) |", "|---|---|---|---|---|"]
    spreads: dict[str, list[float]] = {}
    for (method, task), per in sorted(cells.items()):
        seeds = sorted(set.intersection(*(set(by_seed) for by_seed in per.values())))
        if len(per) < 2 or not seeds:
            continue
        means = {t: statistics.mean(by_seed[s] for s in seeds) for t, by_seed in sorted(per.items())}
        spread = max(means.values()) - min(means.values())
        spreads.setdefault(method, []).append(spread)
        shown = ", ".join(f"{t} {v:.3f}" for t, v in means.items())
        lines.append(f"| {method} | {task} | {', '.join(map(str, seeds))} | {shown} | {spread:.3f} |")
    lines += ["", "| method | tasks | mean spread | largest spread |", "|---|---|---|---|"]
    lines += [f"| {m} | {len(v)} | {statistics.mean(v):.3f} | {max(v):.3f} |" for m, v in sorted(spreads.items())]
    return "\n".join(lines) + "\n"


def paired_comparison(rows: list[dict], method: str) -> str:
    """`method` against every other method on the (task, seed) pairs that both ran: test accuracy differences
    and ratios of peak train-step memory (a grid family at its dev-selected point per task, as in table.md)."""
    chosen, by_run = selection(rows), {(r["task"], r["method"], r["seed"]): r for r in rows}
    families = list(dict.fromkeys(base(r["method"]) for r in rows))
    summary = ["| against | pairs (tasks) | accuracy difference, mean ± s.e. over pairs | pairs ahead / level / "
               "behind | tasks ahead / level / behind (seed means) | peak memory ratio min / median / max | "
               "pairs above 1.10x |", "|---|---|---|---|---|---|---|"]
    detail = ["| against | task | seeds | accuracy difference per seed | peak memory ratio per seed |",
              "|---|---|---|---|---|"]
    for other in (f for f in families if f != method):
        diffs, ratios, per_task = [], [], []
        for task in sorted({r["task"] for r in rows}):
            if (task, method) not in chosen or (task, other) not in chosen:
                continue
            mine, theirs = chosen[(task, method)]["point"], chosen[(task, other)]["point"]
            seeds = sorted(s for t, m, s in by_run if t == task and m == mine and (task, theirs, s) in by_run)
            if not seeds:
                continue
            pairs = [(by_run[(task, mine, s)], by_run[(task, theirs, s)]) for s in seeds]
            d = [metric_of(a["result"]) - metric_of(b["result"]) for a, b in pairs]
            r = [_peak(a) / _peak(b) for a, b in pairs if _peak(a) and _peak(b)]
            diffs += d
            ratios += r
            per_task.append(statistics.mean(d))
            detail.append(f"| {other} | {task} | {', '.join(map(str, seeds))} | "
                          f"{', '.join(f'{x:+.3f}' for x in d)} | {', '.join(f'{x:.3f}' for x in r) or '-'} |")
        if not diffs:
            continue
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        memory = (f"{min(ratios):.3f} / {statistics.median(ratios):.3f} / {max(ratios):.3f}" if ratios else "-")
        summary.append(f"| {other} | {len(diffs)} ({len(per_task)}) | {statistics.mean(diffs):+.4f} ± {se:.4f} | "
                       f"{_signs(diffs)} | {_signs(per_task)} | {memory} | {sum(x > 1.10 for x in ratios)} |")
    return "\n".join([f"{method} against each other method, paired by task and seed.", "", *summary, "",
                      *detail]) + "\n"


def _signs(values: list[float]) -> str:
    """How many are above / equal to / below zero (within 1e-9)."""
    return " / ".join(str(n) for n in (sum(v > 1e-9 for v in values), sum(abs(v) <= 1e-9 for v in values),
                                        sum(v < -1e-9 for v in values)))
