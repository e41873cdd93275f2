"""Time to the reference method's dev accuracy (speedup*.md): per task and seed, on seconds or on training work."""

from __future__ import annotations

import statistics

from experiments.report.runs import CLOCK_NAMES, WORK, clock_of, dev_curve, dev_entries
from experiments.report.selection import curve_rows


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
