"""How wrong is a ZO projected gradient when the probed weights are bf16? (CPU is fine.)

    PYTHONPATH=src python benchmarks/bf16_probe_noise.py --data ../shared/data/sst2 --eps 1e-3 1e-2 --out DIR

On SmolLM2-135M and one SST-2 training batch (16 examples, cross-entropy over the candidates), with theta
rounded to bf16 once (so every variant starts from the same bf16 weights), compute
c = (L(theta + eps u) - L(theta - eps u)) / (2 eps) in float32 for each seed, with the probed weights
* exact: theta +- eps u kept in float32;
* rounded: theta +- eps u rounded to bf16 (what a bf16 model's perturbed copy holds), for all tensors,
  only the matrices, or only the 1-D tensors (norm weights);
and report mean |c - c_exact| against mean |c_exact|. The forward is float32 throughout: what differs is
only where the perturbation lands. `--bf16-forward` adds the real bf16 model (slow on CPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from zofo import zo
from zofo.evaluation.scoring import encode_candidates
from zofo.methods.base import batch_loss
from zofo.models.load import load_model
from zofo.tasks import load_task, sample_splits

ROUNDED: dict[str, Callable[[torch.Tensor], bool]] = {
    "exact": lambda p: False,
    "rounded: all": lambda p: True,
    "rounded: matrices": lambda p: p.dim() > 1,
    "rounded: 1-D": lambda p: p.dim() == 1,
}


def projected_grads(model, theta, batch, seeds, eps, direction) -> dict[str, list[float]]:
    """c per seed for every variant of ROUNDED: the probed weights theta +- eps u, rounded to bf16 where the
    variant says so (u drawn once per seed, shared by the variants)."""
    out: dict[str, list[float]] = {name: [] for name in ROUNDED}
    for seed in seeds:
        u = {n: zo.direction_like(t, seed, zo.tensor_key(n), direction) for n, t in theta.items()}
        for name, rounded in ROUNDED.items():
            losses = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for pname, p in model.named_parameters():
                        w = theta[pname] + sign * eps * u[pname]
                        p.copy_(w.bfloat16().float() if rounded(p) else w)
                    losses.append(batch_loss(model, batch, "ce").item())
            out[name].append((losses[0] - losses[1]) / (2 * eps))
    return out


def bf16_forward_grads(path, batch, seeds, eps, direction) -> list[float]:
    model, _ = load_model(path, dtype="bfloat16", device="cpu")
    params = dict(model.named_parameters())
    return [zo.estimate(lambda: batch_loss(model, batch, "ce"), model, params, [s], eps,
                        direction=direction).projected_grads[0] for s in seeds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", required=True, help="SST-2 folder (GLUE tsv)")
    ap.add_argument("--eps", type=float, nargs="+", default=[1e-3])
    ap.add_argument("--direction", default="rademacher", help="rademacher is ~5x faster to draw on CPU")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--bf16-forward", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()

    model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())  # theta itself is bf16-representable in every variant
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = encode_candidates(tokenizer, sample_splits(load_task("sst2", args.data), seed=0).train[:16], 128)
    seeds = [zo.step_seed(0, i) for i in range(args.seeds)]
    rows = []
    for eps in args.eps:
        grads = projected_grads(model, theta, batch, seeds, eps, args.direction)
        if args.bf16_forward:
            grads["bf16 model (bf16 forward)"] = bf16_forward_grads(args.model, batch, seeds, eps, args.direction)
        exact = grads["exact"]
        for name, cs in grads.items():
            error = statistics.mean(abs(a - b) for a, b in zip(cs, exact, strict=True))
            rows.append({"eps": eps, "variant": name, "mean_abs_error": error,
                         "mean_abs_c_exact": statistics.mean(abs(c) for c in exact), "c": cs})
            print(f"eps {eps:g} {name}: mean |c - c_exact| {error:.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(os.sys.argv),
              "direction": args.direction, "seeds": seeds, "rows": rows}
    (args.out / "bf16_probe_noise.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["| eps | probed weights | mean abs(c - c_exact) | / mean abs(c_exact) |", "|---|---|---|---|"]
    lines += [f"| {r['eps']:g} | {r['variant']} | {r['mean_abs_error']:.3f} | "
              f"{r['mean_abs_error'] / r['mean_abs_c_exact']:.1%} |" for r in rows]
    (args.out / "bf16_probe_noise.md").write_text(
        f"# Projected-gradient error from bf16 probed weights\n\n`PYTHONPATH=src python "
        f"benchmarks/bf16_probe_noise.py {' '.join(os.sys.argv[1:])}`  \n{record['date']}, CPU, "
        f"{args.direction}, {args.seeds} seeds\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
