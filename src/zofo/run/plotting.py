"""Curves of one or more runs: training loss and dev metric against steps and seconds (PNG).

Seconds are training seconds (`train_time`: evaluations and checkpoints left out) when every run logged them,
else wall-clock seconds (logs from before `train_time`)."""

from __future__ import annotations

from pathlib import Path

from zofo.errors import ZofoError
from zofo.run.logs import CLOCKS, read_log, shared_clock


def plot_runs(run_dirs: list[str], out: str | None = None) -> Path:
    """Four panels (loss and dev metric, against steps and seconds), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    runs = [(Path(d).name, _records(Path(d))) for d in run_dirs]
    clock = shared_clock(r for _, records in runs for r in records)
    for label, records in runs:
        for row, phase, key in ((0, "train", "loss"), (1, "dev", _metric(records))):
            points = [r for r in records if r["phase"] == phase and key in r]
            for col, axis in enumerate(("step", clock)):
                axes[row][col].plot([r[axis] for r in points], [r[key] for r in points], label=label,
                                    marker="." if phase == "dev" else None)
                axes[row][col].set_xlabel(CLOCKS.get(axis, axis))
                axes[row][col].set_ylabel(f"{phase} {key}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    target = Path(out) if out else Path(run_dirs[0]) / "curves.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def _records(run_dir: Path) -> list[dict]:
    if not (run_dir / "log.jsonl").exists():
        raise ZofoError(f"{run_dir} has no log.jsonl", "pass the folder of a zofo train run")
    return read_log(run_dir)


def _metric(records: list[dict]) -> str:
    dev = [r for r in records if r["phase"] == "dev"]
    return "f1" if dev and "f1" in dev[0] else "accuracy"
