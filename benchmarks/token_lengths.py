"""Tokens per training example under two tokenizers, on the real tasks: how far a shape model's sequences (built with
one tokenizer) are from the real model's (built with another).

    PYTHONPATH=src python benchmarks/token_lengths.py TOKENIZER_A TOKENIZER_B [--tasks copa sst2 cb boolq] \
        [--data-root ../shared/data] [--examples 256] [--out FILE.json]

TOKENIZER_A / _B: model folders or tokenizer folders (`benchmarks/shape_model.py --tokenizer-only` writes the real
Qwen2.5-Coder tokenizer from its GGUF). Per task, the first `--examples` training examples of data split 0 (the
sample a run of `data.seed` 0 trains on), encoded as a training batch is (`encode_candidates`: every candidate a
row, max_length 256), in batches of 16: the tokens per example that the attention masks count (padding left out).
Host-side only. Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoTokenizer

from zofo.evaluation.scoring import encode_candidates
from zofo.models.load import prepare_tokenizer
from zofo.tasks import load_task, sample_splits

try:  # imported as benchmarks.token_lengths (the tests, PYTHONPATH=.)
    from benchmarks.eval_baselines import SUITE
except ModuleNotFoundError:  # run as a script: benchmarks/ is on the path
    from eval_baselines import SUITE

BATCH, MAX_LENGTH = 16, 256


def tokens_per_example(tokenizer, examples: list) -> float:
    """Unpadded tokens of every candidate row, per example, as training batches of BATCH encode them."""
    tokens = sum(int(encode_candidates(tokenizer, examples[i:i + BATCH], MAX_LENGTH).attention_mask.sum())
                 for i in range(0, len(examples), BATCH))
    return tokens / len(examples)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tokenizers", nargs=2, type=Path)
    parser.add_argument("--tasks", nargs="+", default=["copa", "sst2", "cb", "boolq"], choices=list(SUITE))
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    tokenizers = [prepare_tokenizer(AutoTokenizer.from_pretrained(str(path))) for path in args.tokenizers]
    report = {"tokenizers": [str(path) for path in args.tokenizers], "examples": args.examples, "tasks": {}}
    print(f"| task | {args.tokenizers[0].name} | {args.tokenizers[1].name} | B / A |\n|---|---|---|---|")
    for task in args.tasks:
        train = sample_splits(load_task(task, args.data_root / SUITE[task]), 1000, 500, 1000, seed=0).train
        a, b = (tokens_per_example(tokenizer, train[:args.examples]) for tokenizer in tokenizers)
        report["tasks"][task] = {"a": a, "b": b, "ratio": b / a}
        print(f"| {task} | {a:.1f} | {b:.1f} | {b / a:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
