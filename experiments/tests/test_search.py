"""experiments/search.py: the step past a grid edge is a rule of the search, bounded by the study."""

from __future__ import annotations

import pytest

from experiments import search


@pytest.mark.parametrize(("value", "direction", "stepped"), [
    (3e-4, 1, 1e-3), (1e-3, 1, 3e-3), (1e-4, -1, 3e-5), (3e-5, -1, 1e-5), (1e-5, -1, 3e-6)])
def test_the_ladder_steps_by_half_decades(value, direction, stepped):
    assert search.ladder_step(value, direction) == stepped


def row(task: str, method: str, dev: float, **lrs: float) -> dict:
    return {"task": task, "method": method, "seed": 0, "log": [],
            "result": {"best_dev": dev, "config": {"optim": dict(lrs)}}}


STUDY = {"search": {"steps_past_edge": 1}, "methods": [
    {"name": "mezo", "set": {}, "grid": {"optim.lr": [1e-5, 3e-5]}},
    {"name": "bi", "set": {}, "grid": {"optim.lr_upper,optim.lr_lower": [1e-4, 3e-4]}}]}


def test_a_choice_at_an_edge_proposes_the_next_point_past_it_and_no_further_than_the_study_allows():
    rows = [row("rte", "mezo@lr1e-05", 0.5, lr=1e-5), row("rte", "mezo@lr3e-05", 0.6, lr=3e-5),  # top edge
            row("cb", "mezo@lr1e-05", 0.7, lr=1e-5), row("cb", "mezo@lr3e-05", 0.6, lr=3e-5),  # bottom edge
            row("cb", "bi@lr_upper0.0001", 0.5, lr_upper=1e-4, lr_lower=1e-4),
            row("cb", "bi@lr_upper0.0003", 0.7, lr_upper=3e-4, lr_lower=3e-4)]
    proposed = {(task, m["name"], next(iter(m["grid"].values()))[0]) for task, m in search.next_points(STUDY, rows)}
    assert proposed == {("rte", "mezo", 1e-4), ("cb", "mezo", 3e-6), ("cb", "bi", 1e-3)}
    rows += [row("rte", "mezo@lr0.0001", 0.7, lr=1e-4)]  # one step past already run and chosen: the limit binds
    assert ("rte", "mezo") not in {(t, m["name"]) for t, m in search.next_points(STUDY, rows)}


def test_a_choice_inside_its_grid_proposes_nothing():
    rows = [row("rte", "mezo@lr1e-05", 0.5, lr=1e-5), row("rte", "mezo@lr3e-05", 0.7, lr=3e-5),
            row("rte", "mezo@lr0.0001", 0.6, lr=1e-4)]
    assert search.next_points(STUDY, rows) == []
