"""What selected.md lists after its table: the choices a reader should doubt (at a grid edge, on fewer seeds, on
unequal budgets, on an untrained start)."""

from __future__ import annotations

import statistics

from experiments.report.runs import _seed_values, best_dev_until, budget_share, metric_of
from experiments.report.selection import chosen_runs, config_value, grid_axis, grid_keys, point_runs


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
