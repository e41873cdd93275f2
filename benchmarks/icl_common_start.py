"""ICL scoring with the batch's common start (the demonstrations) run once, against each example's prompt run once
for its candidates (the scoring before), on real tasks and a real model.

    PYTHONPATH=src python benchmarks/icl_common_start.py MODEL TASK_FOLDER... [--n-test 64] [--repeats 2] \
        [--device auto] [--dtype float32] [--out FILE.json]

Per task, seed 0 of the meta-test protocol's sample (`sample_splits(task, 16, 16, n_test)`, the 16 demonstrations
`icl_demonstrations` draws): `evaluate(..., demonstrations=...)` as a meta-test unit runs it, timed whole (device
events on CUDA after a warm-up evaluation, the host clock elsewhere), the two variants alternating `--repeats` times
(`COMMON_MIN_TOKENS` as shipped, or out of reach). Records each variant's seconds (the median of the repeats), the
accuracy, the predictions that differ between the variants and the largest score difference (float rounding only).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from unittest.mock import patch

import torch

from zofo.evaluation import icl_demonstrations, scoring
from zofo.evaluation.harness import with_demonstrations
from zofo.evaluation.metrics import argmax
from zofo.meta.pool import resolve
from zofo.meta.protocol import MetaTestProtocol
from zofo.models.device import resolve_device
from zofo.models.load import load_model
from zofo.tasks import sample_splits

try:  # imported as benchmarks.icl_common_start (the tests, PYTHONPATH=.)
    from benchmarks.meta_test_unit import timed
except ModuleNotFoundError:  # run as a script: benchmarks/ is on the path
    from meta_test_unit import timed

VARIANTS = ("per example", "common start once")


def common_start(once: bool):
    """The batch's common start run once where it pays (True, as shipped), or never; put back after."""
    return patch.object(scoring, "COMMON_MIN_TOKENS", scoring.COMMON_MIN_TOKENS if once else 1 << 62)


def task_figures(model, tokenizer, folder: Path, n_test: int, repeats: int, device: str) -> dict:
    """Both variants on one task: seconds of every repeat, accuracy, disagreements, largest score difference."""
    protocol = MetaTestProtocol()
    task = resolve(str(folder), folder.parent, "argument")[0].load()
    splits = sample_splits(task, n_train=protocol.shots, n_dev=protocol.n_dev, n_test=n_test, seed=0)
    examples = with_demonstrations(splits.test, icl_demonstrations(splits.train, protocol.shots, 0))
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    scores: dict[str, list[list[float]]] = {}
    for _ in range(repeats):
        for variant in VARIANTS:
            with common_start(variant == VARIANTS[1]):
                scores[variant], took = timed(device, lambda: scoring.score_examples(
                    model, tokenizer, examples, protocol.eval_batch_size, 2048, progress=False,
                    max_tokens=protocol.eval_max_tokens))
            seconds[variant].append(took)
    predicted = {v: [argmax(row) for row in scores[v]] for v in VARIANTS}
    right = {v: sum(p == e.label for p, e in zip(predicted[v], examples, strict=True)) / len(examples)
             for v in VARIANTS}
    gap = max(abs(a - b) for x, y in zip(*scores.values(), strict=True) for a, b in zip(x, y, strict=True)
              if a != float("-inf"))
    median = {v: statistics.median(s) for v, s in seconds.items()}
    return {"n_test": len(examples), "seconds": seconds, "median_seconds": median,
            "speed_up": median[VARIANTS[0]] / median[VARIANTS[1]], "accuracy": right,
            "predictions_differing": sum(a != b for a, b in zip(*predicted.values(), strict=True)),
            "largest_score_difference": gap}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a name zofo loads, or a model folder")
    parser.add_argument("tasks", nargs="+", type=Path, help="BIG-bench task folders")
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for flag in ("repeats", "n_test"):
        if (value := getattr(args, flag)) < 1:
            parser.error(f"--{flag.replace('_', '-')} {value}: give 1 or more")
    device = resolve_device(args.device)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=device)
    report = {"model": args.model, "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
              "dtype": args.dtype, "threads": torch.get_num_threads(), "tasks": {}}
    task_figures(model, tokenizer, args.tasks[0], min(args.n_test, 8), 1, device)  # warm-up, not reported
    print("| task | test | per example s | common start once s | speed-up | accuracy | differing | largest diff |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.tasks:
        found = task_figures(model, tokenizer, folder, args.n_test, args.repeats, device)
        report["tasks"][folder.name] = found
        s, a = found["median_seconds"], found["accuracy"]
        print(f"| {folder.name} | {found['n_test']} | {s[VARIANTS[0]]:.2f} | {s[VARIANTS[1]]:.2f} | "
              f"{found['speed_up']:.2f}x | {a[VARIANTS[0]]:.3f} / {a[VARIANTS[1]]:.3f} | "
              f"{found['predictions_differing']} | {found['largest_score_difference']:.1e} |", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
