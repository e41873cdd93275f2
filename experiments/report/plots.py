"""The study's figures: dev accuracy against a clock per task (dev_curves.png), time to target against memory
(pareto.png)."""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments.report.runs import CLOCK_NAMES, _peak, clock_of, dev_curve
from experiments.report.selection import curve_rows
from experiments.report.speedup import shown_method


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
