"""What the benchmarks' `--profile` writes (benchmarks/profiling.py), read back and checked on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

KEYS = {"name", "count", "cpu_time_total_us", "self_cpu_time_total_us", "device_time_total_us",
        "self_device_time_total_us"}


def profiled_counts(out_dir: Path, prefix: str, label: str) -> dict[str, int]:
    """{op name: count} of the top ops in ``<prefix>top_ops.json``, after checking both files: the table names
    ``label``, the JSON is sorted by host time (the CPU), every op has exactly the expected fields, and the
    threads account for all host time."""
    assert label in (out_dir / f"{prefix}key_averages.txt").read_text()
    top = json.loads((out_dir / f"{prefix}top_ops.json").read_text())
    assert top["sort_by"] == "cpu_time_total_us" and top["ops"]
    assert all(set(op) == KEYS for op in top["ops"])
    # every event belongs to one thread: the threads' self times add up to the ops' (two sums over different lists)
    threads = top["threads"]
    assert threads and all(t["events"] > 0 for t in threads)
    assert abs(sum(t["self_cpu_time_total_us"] for t in threads) - top["self_cpu_time_total_us"]) \
        <= 1e-6 * top["self_cpu_time_total_us"]
    return {op["name"]: op["count"] for op in top["ops"]}
