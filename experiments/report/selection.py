"""Grid points and the choice among them on dev: which runs are points of one family, their order, and the point
chosen per task."""

from __future__ import annotations

import math
import re
import statistics

from experiments.report.runs import _seed_values, base


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


def point_runs(rows: list[dict], task: str, point: str) -> list[dict]:
    """The runs of grid point ``point`` on ``task``, by seed."""
    return sorted((r for r in rows if r["task"] == task and r["method"] == point), key=lambda r: r["seed"])


def chosen_runs(rows: list[dict], chosen: dict[tuple[str, str], dict], families: list[str]):
    """(task, chosen point, its runs by seed) for every choice (`selection`) of a grid family, in task order."""
    for (task, family), c in sorted(chosen.items()):
        if family in families:
            yield task, c["point"], point_runs(rows, task, c["point"])


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
