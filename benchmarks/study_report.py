"""Tables and plots of a study's finished runs (`python benchmarks/study.py --aggregate DIR`).

Reads every run folder's result.json and log.jsonl and writes one JSON per run, table.md (test accuracy mean
+- std over seeds; time, memory, late train loss and work per method), speed.md, dev_curves.png, and where the
study has them selected.md (grid points chosen on dev), prompts.md (spread over templates), speedup.md and
pareto.png (wall-clock to the reference method's final dev accuracy, against peak memory), speedup_work.md
(the same on training work, which does not depend on how many runs shared the GPU); paired.md when asked (one
method against every other, paired by task and seed).

A method with grid points (`name@lr0.0001`, ...) is one family, `name`; a plain `name` run beside them (in any
task) is one more point of it. table.md, the curves, speedup.md and pareto.png show a family as one method,
per task its point with the best mean dev accuracy over seeds; a tie goes to the study's starting point (the
run name without a grid suffix), then to the smaller grid values (`point_order`). selected.md says which point
that was per task and has every point's test accuracy.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

from zofo.logs import CLOCKS, shared_clock
from zofo.tasks import default_template

WORK = "work"  # a clock of our own: training sequences processed (`add_work_clock`)
CLOCK_NAMES = {**CLOCKS, WORK: "thousands of training sequences processed, forward plus backward"}


def load_runs(*outs: Path, reruns: bool = False) -> list[dict]:
    """Every finished run in the run folders under `outs` (studies of several sessions can be pooled). A run name
    found twice is an error, not a silent overwrite, unless `reruns`: then the later folder's run (a run made again,
    e.g. under fairer conditions) replaces the earlier one, and each replacement is printed."""
    found: dict[str, Path] = {}
    for result in (r for out in outs for r in sorted(out.glob("*/result.json"))):
        name, folder = result.parent.name, result.parent.parent
        if name in found and not reruns:
            raise ValueError(f"run {name} is in both {found[name].parent.parent} and {folder}: pool studies whose runs "
                             "differ, or pass --reruns to let the later folder's run replace the earlier one")
        if name in found:
            print(f"{name}: the run in {folder} replaces the one in {found[name].parent.parent}")
        found[name] = result
    return [load_run(result) for result in sorted(found.values())]


def load_run(result: Path) -> dict:
    """One run's row: task, method and seed from its folder name, its result.json and its log."""
    task, method, seed = result.parent.name.split("__")
    log = [json.loads(line) for line in (result.parent / "log.jsonl").read_text().splitlines()]
    return add_work_clock({"task": task, "method": method, "seed": int(seed[1:]),
                           "result": json.loads(result.read_text()), "log": log})


def add_work_clock(row: dict) -> dict:
    """Give every dev evaluation of a run a `work` reading: thousands of training sequences through the model by
    then, a backward pass counted as one forward (a PEFT backward computes activation gradients only, about a
    forward's matrix products; the ZO methods have none). Each method's work per step is constant, so it is the
    step times the run's total over its steps. Unlike seconds, it does not depend on what else ran on the GPU.
    Runs from before `work` was recorded get none."""
    work, steps = row["result"].get("work"), row["result"].get("steps")
    if work and steps:
        per_step = (work["forward_rows"] + work["backward_rows"]) / steps / 1000
        for entry in dev_entries(row):
            entry[WORK] = entry["step"] * per_step
    return row


def metric_of(result: dict) -> float:
    test = result["test"]
    return test.get("accuracy", test.get("f1"))


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


def step_budget(row: dict) -> int | None:
    """The run's step budget (train.steps of the config it saved), if it saved one."""
    return row["result"].get("config", {}).get("train", {}).get("steps")


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


def base(name: str) -> str:
    """A grid point's or template's family: the part before '@'."""
    return name.split("@", 1)[0]


def _seed_values(rows: list[dict], value) -> dict[tuple[str, str], list[float]]:
    """{(task, method): [value(row) of each seed's run]}."""
    cells: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        cells.setdefault((row["task"], row["method"]), []).append(value(row))
    return cells


def grid_families(rows: list[dict]) -> list[str]:
    """Method families with grid points (a run name with '@'), in order of first appearance."""
    return list(dict.fromkeys(base(r["method"]) for r in rows if "@" in r["method"]))


GRID_KEY = re.compile(r"([a-z_]+?)(\d[\d.]*(?:e[-+]?\d+)?)(?:-|$)")  # one "<key><value>" of a grid suffix


def grid_suffix(method: str) -> list[tuple[str, str]]:
    """A grid point's (key, value) pairs in grid-key order, from its name ("bilevel@lr_upper0.003-lr_lower0.01");
    none for a plain name."""
    return GRID_KEY.findall(method.split("@", 1)[1]) if "@" in method else []


def point_order(method: str) -> tuple:
    """Sort key of a grid point: the numbers in its grid suffix, in grid-key order (smaller first), then its name;
    a plain name (no suffix) sorts first."""
    return tuple(float(v) for _, v in grid_suffix(method)), method


def selection(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (task, family): the point with the best mean dev accuracy over its seeds ("point"), every point in
    `point_order` ("points"), those tied with the best ("tied"; the first is taken) and each one's mean dev.
    Only rows not marked `"selects": False` count (`aggregate(select_seeds=...)`: pick on some seeds only)."""
    dev = _seed_values([r for r in rows if r.get("selects", True)], lambda r: r["result"]["best_dev"])
    families: dict[tuple[str, str], list[str]] = {}
    for task, method in dev:
        families.setdefault((task, base(method)), []).append(method)
    chosen = {}
    for (task, family), points in families.items():
        points = sorted(points, key=point_order)
        means = {p: statistics.mean(dev[(task, p)]) for p in points}
        tied = [p for p in points if means[p] >= max(means.values()) - 1e-9]
        chosen[(task, family)] = {"point": tied[0], "points": points, "tied": tied, "dev": means}
    return chosen


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


def grid_keys(points: list[str]) -> list[str]:
    """The config fields a family's grid varies, from its points' suffixes ("@lr_upper0.003-lr_lower0.01")."""
    return list(dict.fromkeys(k for p in points for k, _ in grid_suffix(p)))


def config_value(config: dict, key: str) -> object:
    """The value of field ``key`` in whichever section of a run's config has it (None if none does)."""
    return next((section[key] for section in config.values() if isinstance(section, dict) and key in section), None)


def grid_axis(point: dict, other: dict) -> tuple[tuple[str, ...], int] | None:
    """The axis through ``point`` on which ``other`` lies, and the side it lies on (+1: larger values): the grid keys it
    differs in, when it differs in one, or in several by one common ratio (tied keys, e.g. lr_upper = lr_lower);
    None when it lies off every axis (several keys, moved by different ratios)."""
    keys = tuple(k for k in point if other[k] != point[k])
    if not keys or not all(isinstance(v[k], (int, float)) for v in (point, other) for k in keys):
        return None  # the same point, or a grid over names (no larger or smaller)
    side = 1 if other[keys[0]] > point[keys[0]] else -1
    if len(keys) == 1:
        return keys, side
    if not all(v[k] > 0 for v in (point, other) for k in keys):
        return None
    ratios = [math.log(other[k] / point[k]) for k in keys]
    return (keys, side) if max(ratios) - min(ratios) < 1e-6 else None


def grid_edges(rows: list[dict], chosen: dict[tuple[str, str], dict], families: list[str]) -> list[str]:
    """One line per grid axis (`grid_axis`) on which a chosen point (`selection`) has neighbours on one side only:
    the grid does not bracket the choice in that direction."""
    config = {(r["task"], r["method"]): r["result"].get("config", {}) for r in rows}
    lines = []
    for (task, family), c in sorted(chosen.items()):
        keys = grid_keys(c["points"])
        if family not in families or not keys:
            continue
        values = {p: {k: config_value(config[(task, p)], k) for k in keys} for p in c["points"]}
        mine = values[c["point"]]
        if None in mine.values():
            continue
        axes: dict[tuple[str, ...], list[tuple[int, object, str]]] = {}
        for p in c["points"]:
            found = grid_axis(mine, values[p]) if p != c["point"] and None not in values[p].values() else None
            if found:
                axes.setdefault(found[0], []).append((found[1], values[p][found[0][0]], p))
        for axis, others in axes.items():
            sides = {side for side, _, _ in others}
            if len(sides) == 1:
                label = "=".join(axis)
                tied = [p for _, _, p in others if p in c["tied"]]
                lines.append(f"- {task} {family}: {c['point']} has the {'smallest' if 1 in sides else 'largest'} "
                             f"{label} of its grid, {mine[axis[0]]:g} (the others along it: "
                             f"{', '.join(f'{v:g}' for v in sorted(v for _, v, _ in others))})"
                             + (f"; it ties on dev with {', '.join(tied)} along it, so the tie rule, not dev, puts "
                                "it at the edge" if tied else ""))
    return lines


def seeds_missing(rows: list[dict], chosen: dict[tuple[str, str], dict], families: list[str]) -> list[str]:
    """One line per chosen point (`selection`) run on fewer seeds than its family's chosen points are elsewhere
    (the union of their seeds), with the run names that would complete it, ready for `study.py --only`; then one
    line with all of them."""
    have = {cell: [r["seed"] for r in point_runs(rows, cell[0], c["point"])] for cell, c in chosen.items()}
    wanted: dict[str, set[int]] = {}
    for (_, family), seeds in have.items():
        wanted.setdefault(family, set()).update(seeds)
    lines, names = [], []
    for (task, family), c in sorted(chosen.items()):
        seeds = have[(task, family)]
        missing = [f"{task}__{c['point']}__s{s}" for s in sorted(wanted[family] - set(seeds))]
        if family in families and missing:
            lines.append(f"- {task} {c['point']}: seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}; "
                         f"to run: {' '.join(missing)}")
            names += missing
    return lines + ([f"- all of them: `--only {' '.join(names)}`"] if len(lines) > 1 else [])


def untrained_choices(rows: list[dict], chosen: dict[tuple[str, str], dict], families: list[str]) -> list[str]:
    """One line per chosen point (`selection`) with seeds whose best dev came at step 0, the evaluation before the
    first step: those seeds deploy the model they started from, so their test accuracy owes nothing to training."""
    lines = []
    for task, point, runs in chosen_runs(rows, chosen, families):
        start = [r for r in runs if r["result"].get("best_step") == 0]
        if start:
            seeds = ", ".join(str(r["seed"]) for r in start)
            tests = ", ".join(f"{metric_of(r['result']):.3f}" for r in start)
            lines.append(f"- {task} {point}: seed{'s' * (len(start) > 1)} {seeds} of {len(runs)} (test {tests})")
    return lines


def point_runs(rows: list[dict], task: str, point: str) -> list[dict]:
    """The runs of grid point ``point`` on ``task``, by seed."""
    return sorted((r for r in rows if r["task"] == task and r["method"] == point), key=lambda r: r["seed"])


def chosen_runs(rows: list[dict], chosen: dict[tuple[str, str], dict], families: list[str]):
    """(task, chosen point, its runs by seed) for every choice (`selection`) of a grid family, in task order."""
    for (task, family), c in sorted(chosen.items()):
        if family in families:
            yield task, c["point"], point_runs(rows, task, c["point"])


def best_dev_until(row: dict, step: int) -> float:
    """A run's best dev metric over its evaluations up to ``step`` (nan if none)."""
    return max((e.get("accuracy", e.get("f1")) for e in dev_entries(row) if e["step"] <= step), default=math.nan)


def budget_share(row: dict) -> float | None:
    """The share of its step budget a run reached (None for a run without a recorded budget)."""
    steps, budget = row["result"].get("steps"), row["result"].get("config", {}).get("train", {}).get("steps")
    return steps / budget if steps is not None and budget else None


def apart(shares: list[float], spread: float) -> bool:
    """Whether budget shares differ by more than ``spread`` times (at least two of them)."""
    return len(shares) > 1 and max(shares) > spread * min(shares)


def seeds_unequal(rows: list[dict], chosen: dict[tuple[str, str], dict], families: list[str],
                  spread: float = 1.2) -> list[str]:
    """One line per chosen point (`selection`) whose seeds reached shares of their step budgets more than
    ``spread`` times apart: its test mean mixes runs that trained unequally far."""
    lines = []
    for task, point, runs in chosen_runs(rows, chosen, families):
        shares = [(r, share) for r in runs if (share := budget_share(r)) is not None]
        if not apart([v for _, v in shares], spread):
            continue
        lines.append(f"- {task} {point}: " + ", ".join(
            f"seed {r['seed']} {100 * v:.0f}% (test {metric_of(r['result']):.3f})" for r, v in shares))
    return lines


def unequal_progress(rows: list[dict], chosen: dict[tuple[str, str], dict], families: list[str],
                     spread: float = 1.2) -> list[str]:
    """One line per (task, grid family) of ``chosen`` (`selection`) whose points reached shares of their step
    budgets more than ``spread`` times apart (runs without a recorded budget left out), with the choice made again
    on the dev evaluations up to the last step every point's runs reached: the same choice says the unequal budgets
    did not decide it."""
    choosing = [r for r in rows if r.get("selects", True)]
    share = _seed_values([r for r in choosing if budget_share(r) is not None], budget_share)
    lines = []
    for (task, family), c in sorted(chosen.items()):
        shares = {p: statistics.mean(share[(task, p)]) for p in c["points"] if (task, p) in share}
        if family not in families or not apart(list(shares.values()), spread):
            continue
        mine = [r for r in choosing if r["task"] == task and r["method"] in c["points"]]
        common = min(r["result"]["steps"] for r in mine)
        early = _seed_values(mine, lambda r, last=common: best_dev_until(r, last))
        dev = {p: statistics.mean(early[(task, p)]) for p in c["points"]}
        best = max(dev.values())
        again = next(p for p in c["points"] if dev[p] >= best - 1e-9)  # `points` is in the tie order
        verdict = "the same choice" if again == c["point"] else f"{again}, not {c['point']}"
        lines.append(f"- {task} {family}: " + ", ".join(f"{p} {100 * v:.0f}%" for p, v in shares.items())
                     + f"; best dev up to step {common}: " + ", ".join(f"{p} {v:.3f}" for p, v in dev.items())
                     + f" -> {verdict}")
    return lines


GRID_CHECKS = [  # (heading, check(rows, chosen, families) -> lines): what selected.md lists after its table
    ("Choices at an edge of their grid (every neighbour along one grid key, the other keys equal, or along tied keys "
     "moved together, lies on one side): one step further along it may do better on dev.", grid_edges),
    ("Chosen points with fewer seeds than the method's other choices: their test mean rests on those alone. "
     "`study.py --seeds ... --only NAMES` with the study file that has the point runs the rest.", seeds_missing),
    ("Grid points that trained unequally far (the share of its step budget each reached, mean over the seeds that "
     "choose): a time cap stops a run sooner when more runs share its GPU, so a point may lose on dev for that "
     "alone.", unequal_progress),
    ("Chosen points with seeds that deploy the untrained start (their best dev came at step 0, before the first "
     "step): those seeds' test accuracy is the starting model's, whatever the method.", untrained_choices),
    ("Chosen points whose seeds trained unequally far (the share of its step budget each seed reached, and its test "
     "accuracy): their test mean mixes budgets.", seeds_unequal),
]


def curve_rows(rows: list[dict], names: list[str]) -> list[tuple[str, dict]]:
    """(name, run) for every run a curve name stands for: a point named in full ('zo-lora@lr0.0003') is itself; a
    base name ('zo-lora') is, per task, its dev-selected point (a method without grid points: itself)."""
    chosen, picked = selection(rows), []
    for row in rows:
        method = row["method"]
        if "@" in method and method in names:
            picked.append((method, row))
        if base(method) in names and chosen[(row["task"], base(method))]["point"] == method:
            picked.append((base(method), row))
    return picked


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


def _peak(row: dict) -> float:
    return row["result"].get("peak_memory_mib", {}).get("train_step", 0.0)


def _signs(values: list[float]) -> str:
    """How many are above / equal to / below zero (within 1e-9)."""
    return " / ".join(str(n) for n in (sum(v > 1e-9 for v in values), sum(abs(v) <= 1e-9 for v in values),
                                        sum(v < -1e-9 for v in values)))


def clock_of(rows: list[dict]) -> str:
    """The clock that runs are compared on: the one every dev evaluation of every one of them carries."""
    return shared_clock(e for r in rows for e in dev_entries(r))


def dev_entries(row: dict) -> list[dict]:
    """A run's dev evaluations from its log, in order."""
    return [e for e in row["log"] if e.get("phase") == "dev"]


def dev_curve(row: dict, clock: str = "time") -> list[tuple[float, float]]:
    """(reading of `clock`, dev accuracy) of every evaluation of a run."""
    return [(e[clock], e.get("accuracy", e.get("f1"))) for e in dev_entries(row)]


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """First wall-clock second at which the dev accuracy reaches ``target`` (None: never)."""
    return next((t for t, acc in curve if acc >= target - 1e-12), None)


def speedups(rows: list[dict], reference: str, methods: list[str], target_kind: str = "final",
             clock: str | None = None, across_seeds: bool = False) -> list[dict]:
    """Per (task, seed, method): seconds to the reference's final dev accuracy (``target_kind`` "best": its
    best) and the reference's own time to it (the first evaluation at or above that value) divided by that.
    Names resolve as in `curve_rows` (a grid family: its dev-selected point per task; "point" is the run used).
    No speed-up is defined where the target is not above the reference's first evaluation (any method
    "reaches" it at once); `reference_improved` says which, `reference_peak` whether it rose above the first
    and fell back. ``clock``: compare on it (e.g. `WORK`) where every run of a group has it; default: the
    clock the group shares (`clock_of`). ``across_seeds``: every run of a task against every seed of the
    reference (for methods run on other seeds than it; `reference_seed` says which)."""
    found, runs = [], curve_rows(rows, methods)
    for _, ref in curve_rows(rows, [reference]):
        mine = [(name, row) for name, row in runs if row["task"] == ref["task"]
                and (row["seed"] == ref["seed"] or (across_seeds and name != reference))]
        group = [ref, *(row for _, row in mine)]
        if clock is not None and not all(e.get(clock) is not None for r in group for e in dev_entries(r)):
            continue
        clock_used = clock or clock_of(group)
        curve = dev_curve(ref, clock_used)
        if not curve:
            continue
        first, peak = curve[0][1], max(acc for _, acc in curve)
        target = peak if target_kind == "best" else curve[-1][1]
        t_ref = time_to(curve, target)
        improved = target > first + 1e-12
        n_dev = next((e.get("n") for e in reversed(dev_entries(ref))), None)
        for name, row in mine:
            t = time_to(dev_curve(row, clock_used), target)
            found.append({"task": row["task"], "seed": row["seed"], "method": name, "point": row["method"],
                          "target": target, "seconds": t, "clock": clock_used, "reference_point": ref["method"],
                          "reference_seconds": t_ref, "reference_first": first, "reference_peak": peak,
                          "reference_improved": improved, "reference_dev_n": n_dev, "target_kind": target_kind,
                          "reference_seed": ref["seed"],
                          "speedup": t_ref / t if t and t_ref and improved else None})
    return found


def shown_method(f: dict) -> str:
    """A speed-up row's method: its name, and the grid point it resolved to where that differs."""
    point = f.get("point", f["method"])
    return f["method"] if point == f["method"] else f"{f['method']} ({point})"


def undefined_reason(f: dict, reference: str) -> str:
    """Why a seed has no speed-up: the reference ended no higher than it started (and whether it rose between)."""
    first, peak = f.get("reference_first"), f.get("reference_peak")
    if first is not None and peak is not None and peak > first + 1e-12:
        return (f"- ({reference}'s final dev not above its first evaluation, {first:.3f}: "
                f"it rose to {peak:.3f} and fell back)")
    return f"- ({reference}'s {f.get('target_kind', 'final')} dev not above its first evaluation: never above it)"


def target_cell(f: dict) -> str:
    """The reference's final dev accuracy, and by how many dev examples it beat its first evaluation: a target
    one example above the untrained model says little about speed."""
    n, first = f.get("reference_dev_n"), f.get("reference_first")
    if not n or first is None or not f.get("reference_improved", True):
        return f"{f['target']:.3f}"
    return f"{f['target']:.3f} (+{round((f['target'] - first) * n)} of {n})"


def speedup_table(found: list[dict], reference: str) -> str:
    groups = {(f["task"], f["seed"]): f.get("clock", "time") for f in found}
    used = [c for c in CLOCK_NAMES if c in groups.values()]
    kind = found[0].get("target_kind", "final") if found else "final"
    unit, digits = ("work", 1) if WORK in used else ("seconds", 0)
    readings = "; ".join(f"{CLOCK_NAMES[c]} for {sum(v == c for v in groups.values())} of the {len(groups)} "
                         "task-seed groups" for c in used)
    lines = [f"{'Work readings' if unit == 'work' else 'Seconds'} are {readings}.", "",
             f"| task | seed | {reference}'s {kind} dev (gain over its first, in dev examples) | method | "
             f"{unit} to it | {reference}'s {unit} | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for f in found:
        reached = f"{f['seconds']:.{digits}f}" if f["seconds"] is not None else "not reached"
        gain = f"{f['speedup']:.2f}x" if f["speedup"] else "-"
        if not f.get("reference_improved", True):
            gain = undefined_reason(f, reference)
        seed = f["seed"] if f["seed"] == f.get("reference_seed", f["seed"]) else f"{f['seed']} vs {f['reference_seed']}"
        lines.append(f"| {f['task']} | {seed} | {target_cell(f)} | {shown_method(f)} | {reached} | "
                     f"{f['reference_seconds']:.{digits}f} | {gain} |")
    return "\n".join(lines) + "\n" + speedup_summary(found, reference)


def seeds_unpaired(rows: list[dict], reference: str, methods: list[str]) -> bool:
    """Whether some method ran on a task on other seeds than the reference there (e.g. one of its three)."""
    seeds: dict[tuple[str, str], set[int]] = {}
    for name, row in curve_rows(rows, [reference, *methods]):
        seeds.setdefault((row["task"], name), set()).add(row["seed"])
    return any(mine != seeds.get((task, reference), mine) for (task, name), mine in seeds.items())


def speedup_summary(found: list[dict], reference: str) -> str:
    """Per task and method: the speed-ups of the seeds where one is defined, their mean, and the seeds left."""
    kind = found[0].get("target_kind", "final") if found else "final"
    lines = ["", f"| task | method | speed-up per seed | mean | seeds without one ({reference}'s {kind} dev not above "
             "its first / not reached) |", "|---|---|---|---|---|"]
    for task, method in sorted({(f["task"], f["method"]) for f in found if f["method"] != reference}):
        cell = [f for f in found if (f["task"], f["method"]) == (task, method)]
        gains = [f["speedup"] for f in cell if f["speedup"]]
        flat = sum(not f.get("reference_improved", True) for f in cell)
        missed = sum(f["seconds"] is None and f.get("reference_improved", True) for f in cell)
        shown = ", ".join(f"{g:.1f}x" for g in gains) or "-"
        mean = f"{statistics.mean(gains):.1f}x" if gains else "-"
        lines.append(f"| {task} | {shown_method(cell[0])} | {shown} | {mean} | {flat} / {missed} |")
    return "\n".join(lines) + "\n"


def plot_pareto(rows: list[dict], found: list[dict], target: Path) -> None:
    """Per task: mean seconds to the reference's final dev accuracy against peak train-step memory (of the run
    name a method resolved to there), one point per method (seeds whose reference never improved left out); one
    legend for the figure (which grid point each method is on a task: speedup_best.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({f["task"] for f in found if f["speedup"]}) or sorted({f["task"] for f in found})
    methods = sorted({f["method"] for f in found})
    colors = method_colors(plt, methods)
    fig, axes = task_panels(plt, len(tasks))
    for axis, task in zip(axes, tasks, strict=True):
        for method in methods:
            mine = [f for f in found if (f["task"], f["method"]) == (task, method)]
            times = [f["seconds"] for f in mine if f["seconds"] is not None and f.get("reference_improved", True)]
            points = {f.get("point", method) for f in mine}
            peaks = [_peak(r) for r in rows if r["task"] == task and r["method"] in points]
            if times and peaks:
                axis.scatter(statistics.mean(times), max(peaks), color=colors[method], label=method)
        axis.set_title(task)
        axis.set_xlabel("seconds to the reference's final dev accuracy (mean)")
        axis.set_ylabel("peak train-step memory (MiB)")
    handles = {label: handle for axis in axes for handle, label in zip(*axis.get_legend_handles_labels(),
                                                                       strict=True)}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 4) or 1, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(target, dpi=110)
    plt.close(fig)


def method_colors(plt, methods: list[str]) -> dict[str, tuple]:
    """One distinct colour per method: matplotlib's ten-colour cycle, or tab20 past ten methods (the cycle would
    repeat, e.g. eleven ablation variants)."""
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {method: palette(i % palette.N) for i, method in enumerate(methods)}


def task_panels(plt, n: int, columns: int = 3):
    """A figure of n panels, at most `columns` a row; returns (figure, the n axes in reading order)."""
    cols = min(n, columns)
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    axes = list(grid.flat)
    for spare in axes[n:]:
        spare.set_visible(False)
    return fig, axes[:n]


def plot_curves(rows: list[dict], target: Path, methods: list[str]) -> None:
    """Dev accuracy against wall-clock seconds, one panel per task, one curve per method (seed 0; names resolve
    as in `curve_rows`: a grid family is drawn as its dev-selected point of the task, named in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    drawn = [(name, row) for name, row in curve_rows(rows, methods) if row["seed"] == 0]
    colors = method_colors(plt, list(dict.fromkeys(name for name, _ in drawn)))
    fig, axes = task_panels(plt, len(tasks))
    for axis, task in zip(axes, tasks, strict=True):
        clock = clock_of([r for _, r in drawn if r["task"] == task])
        for name, row in drawn:
            if row["task"] == task:
                curve = dev_curve(row, clock)
                label = shown_method({"method": name, "point": row["method"]})
                axis.plot([t for t, _ in curve], [acc for _, acc in curve], marker=".", label=label,
                          color=colors[name])
        axis.set_title(task)
        axis.set_xlabel(CLOCK_NAMES[clock])
        axis.set_ylabel("dev accuracy")
        if axis.lines:
            axis.legend(fontsize=8)
        else:  # the curves are seed 0's; a task run with other seeds only has none to draw
            axis.text(0.5, 0.5, "no seed-0 run", ha="center", va="center", transform=axis.transAxes)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def gpu_sharing(outs: list[Path]) -> dict[str, float]:
    """Per run folder: the mean number of runs on its GPU while it ran, itself included (time-weighted), from the
    start and end study.py records in placement.json, over every run folder of `outs` (runs of several studies
    that ran at once count too); runs without both times are left out."""
    spans = {}
    for placement_file in (p for out in outs for p in out.glob("*/placement.json")):
        placement = json.loads(placement_file.read_text())
        if placement.get("ended", 0) > placement.get("started", float("inf")):
            spans[placement_file.parent.name] = (placement["device"], placement["started"], placement["ended"])

    def overlap(a: tuple, b: tuple) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[1], b[1])) if a[0] == b[0] else 0.0

    return {name: sum(overlap(span, other) for other in spans.values()) / (span[2] - span[1])
            for name, span in spans.items()}


def step_speed(out: Path, sharing: dict[str, float] | None = None) -> str:
    """Steps reached and median seconds per step of every run folder, finished or not (from log.jsonl), the
    runs that shared its GPU (`gpu_sharing`), where known, and why an unfinished one stopped (`failure_of`)."""
    sharing = sharing or {}
    lines = ["| run | finished | steps logged | median seconds / step | runs on its GPU (mean) | why it stopped |",
             "|---|---|---|---|---|---|"]
    for log in sorted(out.glob("*/log.jsonl")):
        train = [e for e in map(json.loads, log.read_text().splitlines()) if "step_seconds" in e]
        median = f"{statistics.median(e['step_seconds'] for e in train):.3f}" if train else "-"
        done = (log.parent / "result.json").exists()
        shared = f"{sharing[log.parent.name]:.1f}" if log.parent.name in sharing else "-"
        why = "" if done else failure_of(log.parent)
        lines.append(f"| {log.parent.name} | {'yes' if done else 'no'} | {train[-1]['step'] if train else 0} | "
                     f"{median} | {shared} | {why} |")
    return "\n".join(lines) + "\n"


def failure_of(run_dir: Path) -> str:
    """The last error line of an unfinished run's output (the study's logs/NAME.log beside its folder)."""
    log = run_dir.parent / "logs" / f"{run_dir.name}.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Interrupt)\b", line)]
    return errors[-1][:120].replace("|", "/") if errors else "no error in its output"


WORK_NOTE = ("The speed-up on training work instead of seconds: thousands of training sequences through the model "
             "before each dev evaluation, a backward counted as one forward (`add_work_clock`). Seconds depend on "
             "how many runs shared the GPU, which differed between the calls that ran a group's runs; work does "
             "not. It does not see that one method's sequences cost more than another's (graphs, kernels).\n\n")
ACROSS_NOTE = ("Some methods ran on seeds the reference did not, so each run is timed here against the reference's "
               "final dev accuracy of every seed of the reference on its task (\"1 vs 0\": the run's seed 1 against "
               "the reference's seed 0), as against a threshold. Same-seed pairs are in speedup.md.\n\n")
BEST_NOTE = ("Secondary view: the time to the reference's *best* dev accuracy, which is defined wherever the reference "
             "rose above its first evaluation at all. The target is the reference's final dev accuracy "
             "(speedup.md).\n\n")


def aggregate(out: Path | list[Path], results: Path, curve_methods: list[str], reference: str = "mezo",
              paired: str | None = None, select_seeds: list[int] | None = None, reruns: bool = False) -> None:
    """Every table and plot of the runs under `out`; `select_seeds`: grid points are chosen on the dev accuracy
    of these seeds only (e.g. [0] when a grid ran on seed 0 and its first choice on three seeds); `reruns`: see
    `load_runs`."""
    outs = out if isinstance(out, list) else [out]
    rows = load_runs(*outs, reruns=reruns)
    for row in rows:
        row["selects"] = select_seeds is None or row["seed"] in select_seeds
    results.mkdir(parents=True, exist_ok=True)
    sharing = gpu_sharing(outs)
    speed = "".join(step_speed(o, sharing) for o in outs)
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
    if paired:
        (results / "paired.md").write_text(paired_comparison(rows, paired))
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
    print(markdown(rows))
