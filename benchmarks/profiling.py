"""torch.profiler for the benchmarks: profile a piece of work, write its op table and its top ops, and label calls.

`profiled(cuda)` records CPU ops (and CUDA kernels on CUDA; no shapes, no stacks, no chrome trace: the files stay
small enough to carry back); `write_profile` writes ``<prefix>key_averages.txt`` (torch's table, sorted by device
time on CUDA, host time elsewhere) and ``<prefix>top_ops.json`` (the same top ops as numbers, in microseconds, with
the host time of every op and each thread's share of it: `thread_totals`);
`labelled` runs a method or function inside `torch.profiler.record_function`, so its calls show as one row;
`write_python_profile` runs a piece of work under cProfile and writes where the host's Python time went.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

ROWS = 40  # ops in the table and in the JSON


@contextmanager
def profiled(cuda: bool) -> Iterator[profile]:
    """A running profiler; on CUDA the device is synchronised before it stops, so every kernel is in."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=False, with_stack=False) as prof:
        yield prof
        if cuda:
            torch.cuda.synchronize()


def op_row(avg: object) -> dict:
    """One averaged op (a `FunctionEventAvg`) as plain numbers, microseconds."""
    return {"name": avg.key, "count": avg.count,
            "cpu_time_total_us": float(avg.cpu_time_total), "self_cpu_time_total_us": float(avg.self_cpu_time_total),
            "device_time_total_us": float(avg.device_time_total),
            "self_device_time_total_us": float(avg.self_device_time_total)}


def write_profile(prof: profile, out_dir: Path, prefix: str, cuda: bool) -> None:
    """``<prefix>key_averages.txt`` and ``<prefix>top_ops.json`` under out_dir, from a finished profiler: the ROWS
    ops with the most total time (the device's on CUDA, the host's elsewhere)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    averages = prof.key_averages()
    sort_by = "cuda_time_total" if cuda else "cpu_time_total"  # the table maps "cuda" to the device's times
    (out_dir / f"{prefix}key_averages.txt").write_text(averages.table(sort_by=sort_by, row_limit=ROWS) + "\n")
    rows = sorted((op_row(avg) for avg in averages),
                  key=lambda r: r["device_time_total_us" if cuda else "cpu_time_total_us"], reverse=True)
    top = {"sort_by": "device_time_total_us" if cuda else "cpu_time_total_us", "ops": rows[:ROWS],
           "self_cpu_time_total_us": float(sum(avg.self_cpu_time_total for avg in averages)),
           "threads": thread_totals(prof)}
    (out_dir / f"{prefix}top_ops.json").write_text(json.dumps(top, indent=1) + "\n")


def thread_totals(prof: profile) -> list[dict]:
    """Per host thread, its host events and their summed self time (microseconds), the busiest first. On CUDA the
    autograd engine runs a backward's ops on its own device thread: the main thread's wait in ``backward()`` is
    then no op's time, so it shows as the self time of the range around it (a `record_function` label), and the
    backward's own cost is the other thread's total."""
    totals: dict[int, list[float]] = {}
    for event in prof.events():
        if event.device_type != DeviceType.CPU:  # a kernel's "thread" is its stream, and it has no host time
            continue
        total = totals.setdefault(event.thread, [0, 0.0])
        total[0] += 1
        total[1] += event.self_cpu_time_total
    rows = [{"thread": thread, "events": n, "self_cpu_time_total_us": float(us)} for thread, (n, us) in totals.items()]
    return sorted(rows, key=lambda r: r["self_cpu_time_total_us"], reverse=True)


@contextmanager
def labelled(owner: object, attribute: str, label: str) -> Iterator[None]:
    """While open, ``owner.attribute`` (a method of a class, or a module's function) runs inside
    ``record_function(label)``; put back on leaving."""
    inner: Callable = getattr(owner, attribute)
    own = attribute in vars(owner)  # else inherited: removed on leaving, not copied onto owner

    def wrapped(*args, **kwargs):
        with record_function(label):
            return inner(*args, **kwargs)

    setattr(owner, attribute, wrapped)
    try:
        yield
    finally:
        if own:
            setattr(owner, attribute, inner)
        else:
            delattr(owner, attribute)


def write_python_profile(run: Callable[[], object], out: Path) -> None:
    """``run()`` under cProfile; ``out`` gets the ROWS functions with the most own time, then the ROWS with the
    most cumulative time, as pstats prints them. On CUDA a torch op's own time is its host cost (dispatch and
    launch: the kernel runs later), so where the device waits for the host this says what the host was doing.
    (Arithmetic written as operators, ``a * b``, has no call of its own: its cost is its caller's own time.)"""
    profiler = cProfile.Profile()
    profiler.runcall(run)
    text = io.StringIO()
    for key in ("tottime", "cumulative"):
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(ROWS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.getvalue())
