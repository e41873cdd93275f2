"""Host time to tokenize a meta-test's scoring batches: one tokenizer call for a batch's examples (each prompt with
each candidate, each prompt alone once) against two calls per candidate (prompt+candidate, then the prompt again).

    PYTHONPATH=src python benchmarks/tokenize_batches.py [--split configs/meta/bigbench_split.yaml] [--out DIR] \
        [--n-test 100] [--tasks N]

For every held-out task of the split (the first N with --tasks), seed 0 of the meta-test protocol's sample (16 shots,
16 dev, --n-test test): the
zero-shot and 16-shot ICL scoring batches (32 test examples each, sorted by prompt length as `score_examples`
sorts them, max_length 2048). `encode_candidates` runs with its row cache emptied before each batch (the first
time a meta-test meets them: every test set is new); the per-candidate reference is `split_tokens` for every
(prompt, candidate), what encode_candidates called before. Both are timed on the host clock, alternating, best of
`--repeats`. Writes tokenize_batches.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from zofo.evaluation import icl_demonstrations, scoring
from zofo.evaluation.harness import with_demonstrations
from zofo.meta.protocol import MetaTestProtocol
from zofo.meta.split import read_split
from zofo.models.load import prepare_tokenizer, resolve_source
from zofo.tasks import sample_splits

PROTOCOL = MetaTestProtocol()  # its k-shot sample, dev and scoring batch sizes
MAX_LENGTH = 2048  # evaluate's, as a meta-test unit scores


def one_call(tokenizer, batches) -> float:
    begin = time.perf_counter()
    for batch in batches:
        scoring._ROWS.clear()
        scoring.encode_candidates(tokenizer, batch, MAX_LENGTH)
    return time.perf_counter() - begin


def per_candidate(tokenizer, batches) -> float:
    begin = time.perf_counter()
    for batch in batches:
        for example in batch:
            for candidate in scoring.example_candidates(example)[0]:
                scoring.split_tokens(tokenizer, example.prompt, candidate)
    return time.perf_counter() - begin


def task_batches(task, n_test: int) -> dict[str, list]:
    splits = sample_splits(task, n_train=PROTOCOL.shots, n_dev=PROTOCOL.n_dev, n_test=n_test, seed=0)
    demos = icl_demonstrations(splits.train, PROTOCOL.shots, 0)
    kinds = {"zero-shot": splits.test, "ICL": with_demonstrations(splits.test, demos)}
    size = PROTOCOL.eval_batch_size
    return {kind: [ordered[i:i + size] for i in range(0, len(ordered), size)]
            for kind, examples in kinds.items() for ordered in [sorted(examples, key=lambda e: len(e.prompt))]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="configs/meta/bigbench_split.yaml")
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer (a name zofo loads)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--tasks", type=int, help="only the first N held-out tasks")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for flag in ("repeats", "n_test", "tasks"):
        if (value := getattr(args, flag)) is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} {value}: give 1 or more")
    from transformers import AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(resolve_source(args.model))))
    split = read_split(args.split, lists=("meta_test",))
    found: dict[str, dict] = {}
    print("| task | kind | per candidate s | one call s | faster |\n|---|---|---|---|---|")
    for ref in split.meta_test[:args.tasks]:
        for kind, batches in task_batches(split.task(ref), args.n_test).items():
            times = {"per candidate": [], "one call": []}
            for _ in range(args.repeats):
                times["per candidate"].append(per_candidate(tokenizer, batches))
                times["one call"].append(one_call(tokenizer, batches))
            best = {k: min(v) for k, v in times.items()}
            found.setdefault(ref.name, {})[kind] = best
            print(f"| {ref.name} | {kind} | {best['per candidate']:.3f} | {best['one call']:.3f} | "
                  f"{best['per candidate'] / best['one call']:.2f}x |", flush=True)
    totals = {kind: {k: sum(t[kind][k] for t in found.values()) for k in ("per candidate", "one call")}
              for kind in ("zero-shot", "ICL")}
    for kind, t in totals.items():
        print(f"| **total** | {kind} | **{t['per candidate']:.2f}** | **{t['one call']:.2f}** | "
              f"**{t['per candidate'] / t['one call']:.2f}x** |")
    report = {"split": args.split, "model": args.model, "cpus": os.cpu_count(), "repeats": args.repeats,
              "n_test": args.n_test, "tasks": found, "totals": totals}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tokenize_batches.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
