"""Where the README quickstart's Bilevel ZOFO step spends its time on the CPU: cProfile of two outer steps.

    PYTHONPATH=src python benchmarks/quickstart_profile.py [--out DIR]

configs/quickstart.yaml (SmolLM2-135M, fp32, Rademacher directions), one untimed step first, then two steps
under cProfile. Reports seconds per step in total, in the probes' perturbed copies (`ops.perturbed_copies`)
and in drawing directions for the update (`directions.direction_like`). Writes quickstart_profile.json.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import pstats
import time
from pathlib import Path

import torch

from zofo.api import load_config
from zofo.run.recipe import Run

TRACKED = {"perturbed_copies": "perturbed_copies", "update_directions": "direction_like"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    cfg = load_config("configs/quickstart.yaml", ["train.output_dir=/tmp/zofo-quickstart-profile",
                                                  "data.n_dev=8", "data.n_test=8"])
    method, _ = Run(cfg).start()
    method.step(0)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for step in (1, 2):
        method.step(step)
    profile.disable()
    seconds = (time.perf_counter() - start) / 2
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
    parts = {label: sum(v[3] for k, v in stats.items() if k[2] == name) / 2 for label, name in TRACKED.items()}
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "threads": torch.get_num_threads(),
              "seconds_per_step": seconds, **{f"{k}_seconds_per_step": v for k, v in parts.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quickstart_profile.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
