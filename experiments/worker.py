"""Several runs of a study in one process, each on its own CUDA stream (`zofo.api.train_together`).

    python experiments/worker.py JOB.json      (written by `study.py --together K`)

JOB.json is a list of {"name": ..., "overrides": {key: value}}; prints one status line per run and exits 1 if
any run failed. SIGUSR1 writes every thread's stack to its output (`zofo.run.interrupt.stacks_on_request`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from zofo import api
from zofo.api import load_config
from zofo.run.interrupt import stacks_on_request


def main(job_file: str) -> int:
    stacks_on_request()
    job = json.loads(Path(job_file).read_text())
    cfgs = [load_config(None, [f"{key}={value}" for key, value in run["overrides"].items()]) for run in job]
    results = api.train_together(cfgs)
    for run, result in zip(job, results, strict=True):
        status = "ok" if isinstance(result, dict) else f"error: {type(result).__name__}: {result}"
        print(json.dumps({"name": run["name"], "status": status}), flush=True)
    return 1 if any(isinstance(r, Exception) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
