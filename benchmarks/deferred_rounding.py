"""Rounding noise of k deferred bf16 updates rounded once, against k updates rounded one by one.

    PYTHONPATH=src python benchmarks/deferred_rounding.py [--out DIR]

200,000 bf16 weights at 0.2 (ulp 2**-10), k ZO-SGD steps of 1e-5 * u (about 1% of an ulp each, Gaussian u):
the variance of (result - exact float64 result) when each step is rounded stochastically on its own, divided
by that when their sum is rounded once (``zo.sgd_update_`` with k seeds, what ``update_every=k`` does).
The setting of tests/zo/test_chain.py.  Writes deferred_rounding.json and .md under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import torch

from zofo import zo


def variance_ratio(k: int, n: int = 200_000, coef: float = 1e-5) -> float:
    theta = torch.full((n,), 0.2, dtype=torch.bfloat16)
    seeds = list(range(1, k + 1))
    exact = theta.double() - sum(coef * zo.direction_like(theta, s, 3).double() for s in seeds)
    one_by_one = theta.clone()
    for s in seeds:
        zo.sgd_update_(one_by_one, 3, [s], [coef], backend="torch")
    at_once = theta.clone()
    zo.sgd_update_(at_once, 3, seeds, [coef] * k, backend="torch")
    return ((one_by_one.double() - exact).var() / (at_once.double() - exact).var()).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    rows = {k: variance_ratio(k) for k in (4, 16, 64)}
    args.out.mkdir(parents=True, exist_ok=True)
    date = datetime.datetime.now().isoformat(timespec="seconds")
    (args.out / "deferred_rounding.json").write_text(json.dumps({"date": date, "variance_ratio": rows}, indent=1))
    lines = ["# Rounding variance: k steps rounded one by one / rounded once", "",
             f"`PYTHONPATH=src python benchmarks/deferred_rounding.py {' '.join(os.sys.argv[1:])}`  ", date, "",
             "| k | variance ratio | sqrt(k) |", "|---|---|---|"] + [f"| {k} | {r:.1f} | {k ** 0.5:.1f} |"
                                                                  for k, r in rows.items()]
    (args.out / "deferred_rounding.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
