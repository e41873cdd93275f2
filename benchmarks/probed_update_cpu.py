"""CPU time of one deferred ZO-SGD update along the probed directions (torch path), per direction kind.

    PYTHONPATH=src python benchmarks/probed_update_cpu.py [--n 4000000] [--k 16] [--out DIR]

bf16 theta of ``--n`` elements, ``--k`` steps' (seed, c) applied at once with two-sided ``zo.Probed`` (what
``zo.update_every`` does in bf16), one thread. For Rademacher the update adds the signed coefficients and
computes v once per element; ``rademacher, v per direction`` times the sum over each direction's own v (the
update's previous form, ``zo.probed_direction`` per seed) in the same run.  Writes probed_update_cpu.json and
.md under --out (default $OUT or .).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import torch

from zofo import zo
from zofo.zo.kernels import ops


def seconds(fn, repeats: int = 3) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_direction(theta: torch.Tensor, key: int, seeds: list[int], coefs: list[float], probed: zo.Probed) -> None:
    """theta <- SR(theta - sum_j c_j v_j), each v_j from its own probed copies."""
    g = torch.zeros(theta.shape, dtype=torch.float32)
    for s, c in zip(seeds, coefs, strict=True):
        g.add_(ops.probed_direction(theta, key, s, probed, "rademacher", backend="torch"), alpha=c)
    theta.copy_(zo.stochastic_round(theta.float() - g, theta.dtype, seeds[0], key))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4_000_000)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    theta = (0.1 + 0.2 * torch.rand(args.n, generator=torch.Generator().manual_seed(0))).bfloat16()
    seeds, coefs, probed, key = list(range(1, args.k + 1)), [1e-6] * args.k, zo.Probed(1e-3, True), 7
    rows = {}
    for direction in zo.DIRECTIONS:
        w = theta.clone()
        rows[direction] = seconds(lambda w=w, d=direction: ops.sgd_update_(w, key, seeds, coefs, 1.0, d,
                                                                          backend="torch", probed=probed))
    w = theta.clone()
    rows["rademacher, v per direction"] = seconds(lambda: per_direction(w, key, seeds, coefs, probed))
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
              "n": args.n, "k": args.k, "threads": 1, "seconds": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probed_update_cpu.json").write_text(json.dumps(result, indent=1))
    lines = [f"# One deferred probed update ({args.k} steps) over {args.n} bf16 elements, torch path, one thread", "",
             f"`PYTHONPATH=src python benchmarks/probed_update_cpu.py --n {args.n} --k {args.k}`  ",
             f"{result['date']}, torch {result['torch']}", "", "| direction | seconds | ns / element / step |",
             "|---|---|---|"]
    lines += [f"| {d} | {s:.3f} | {s / args.n / args.k * 1e9:.2f} |" for d, s in rows.items()]
    (args.out / "probed_update_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
