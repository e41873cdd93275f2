"""The study's comparison keeps the units every backbone finished: fewer tasks or fewer seeds, whichever keeps more."""

from __future__ import annotations

from experiments.meta_compare import common_tasks, paired


def finished(**tasks: list[int]) -> dict[str, dict[int, dict]]:
    return {task: {seed: {} for seed in seeds} for task, seeds in tasks.items()}


def test_a_meta_test_stopped_in_its_last_seed_keeps_every_task_with_the_seeds_all_finished():
    whole = finished(a=[0, 1], b=[0, 1], c=[0, 1], d=[0, 1])
    stopped = finished(a=[0, 1], b=[0], c=[0], d=[0])  # seed-major: seed 1 reached task a only
    assert common_tasks({"x": whole, "y": stopped}) == (["a", "b", "c", "d"], [0])


def test_a_meta_test_stopped_inside_a_task_drops_that_task_and_keeps_every_seed():
    whole = finished(a=[0, 1, 2], b=[0, 1, 2], c=[0, 1, 2])
    stopped = finished(a=[0, 1, 2], b=[0, 1, 2], c=[0])  # task-major: stopped inside task c
    assert common_tasks({"x": whole, "y": stopped}) == (["a", "b"], [0, 1, 2])


def test_a_task_one_backbone_never_started_is_left_out():
    assert common_tasks({"x": finished(a=[0], b=[0]), "y": finished(b=[0])}) == (["b"], [0])


def test_paired_differences_are_mean_and_standard_error_over_tasks_with_ties_called():
    d = paired([0.5, 0.7, 0.9], [0.4, 0.5, 0.9])
    assert abs(d["mean"] - 0.1) < 1e-12 and abs(d["se"] - (0.01 / 3) ** 0.5) < 1e-12  # diffs .1 .2 0: sd .1
    assert not d["tie"] and (d["ahead"], d["behind"]) == (2, 0)
    assert paired([0.5, 0.5], [0.4, 0.6])["tie"]
