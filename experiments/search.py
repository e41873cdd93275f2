"""The search rule of a study: when the point chosen on dev sits at an edge of its grid, try the next point past it.

A study file declares its grid once; past that, the search extends itself instead of a new file per step:

    search: {steps_past_edge: 3}      # per task, at most 3 points past the declared grid along any axis

`next_points` reads the finished runs, makes the choice on dev (`report.selection`), and for every choice with
neighbours on one side only along a grid axis (`report.selection.grid_axis`: one key, or tied keys moved together)
proposes the next value on the half-decade ladder (1, 3, 10, 30, ...: 3e-4 -> 1e-3 up, 1e-4 -> 3e-5 down), the same
step the grids of this project use. `python experiments/study.py STUDY --extend SOURCES` runs them.
"""

from __future__ import annotations

import math

from experiments.report.selection import config_value, grid_axis, grid_keys, selection


def ladder_step(value: float, direction: int) -> float:
    """The value one half-decade step past ``value`` (> 0) upwards (direction +1) or downwards (-1)."""
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10 ** exponent
    if direction > 0:
        stepped = (3 if mantissa < 2 else 10) * 10.0 ** exponent
    else:
        stepped = (1 if mantissa > 2 else 0.3) * 10.0 ** exponent
    return float(f"{stepped:.1e}")


def steps_between(a: float, b: float) -> int:
    """Half-decade ladder steps from ``a`` to ``b``."""
    return round(abs(math.log10(b / a)) / (math.log10(10) / 2))


def declared_keys(method: dict) -> dict[str, tuple[str, ...]]:
    """{short key (the name of a grid suffix): the config keys it sets} of a study method's grid."""
    return {key.split(",")[0].rsplit(".", 1)[-1]: tuple(key.split(",")) for key in (method.get("grid") or {})}


def edge_moves(rows: list[dict]) -> list[tuple[str, str, dict[str, float], dict[str, float]]]:
    """(task, family, the chosen point's grid values, the values one step past its edge) for every choice on dev
    with neighbours on one side only along an axis."""
    config = {(r["task"], r["method"]): r["result"].get("config", {}) for r in rows}
    moves = []
    for (task, family), c in sorted(selection(rows).items()):
        keys = grid_keys(c["points"])
        values = {p: {k: config_value(config[(task, p)], k) for k in keys} for p in c["points"]}
        mine = values[c["point"]]
        if not keys or None in mine.values():
            continue
        sides: dict[tuple[str, ...], set[int]] = {}
        for p in c["points"]:
            found = grid_axis(mine, values[p]) if p != c["point"] and None not in values[p].values() else None
            if found:
                sides.setdefault(found[0], set()).add(found[1])
        for axis, seen in sides.items():
            if len(seen) == 1:
                moves.append((task, family, mine, {k: ladder_step(mine[k], -seen.pop()) for k in axis}))
    return moves


def next_points(study: dict, rows: list[dict]) -> list[tuple[str, dict]]:
    """(task name, study method entry) for each step past an edge the study's `search` allows: the entry's grid is
    the one new point (the moved key at its new value, the others at the chosen point's), so `study.expand` names it
    as any grid point."""
    limit = (study.get("search") or {}).get("steps_past_edge", 0)
    methods = {m["name"]: m for m in study["methods"] if m.get("grid")}
    proposals = []
    for task, family, mine, moved in edge_moves(rows):
        method = methods.get(family)
        shorts = declared_keys(method) if method else {}
        short = next((s for s in shorts if s in moved), None)
        if short is None:
            continue
        full = ",".join(shorts[short])
        declared = method["grid"][full]
        edge = min(declared) if moved[short] < mine[short] else max(declared)
        if steps_between(edge, moved[short]) <= limit:  # the other keys stay at the chosen point's values
            grid = {",".join(keys): [moved.get(s, mine.get(s))] for s, keys in shorts.items()}
            proposals.append((task, {**method, "grid": grid}))
    return proposals
