"""Tokens a meta-test runs with and without each example's prompt shared across its candidates, on the real tasks.

    PYTHONPATH=src python benchmarks/shared_prompts.py [--split configs/meta/bigbench_split.yaml] [--out DIR]

Host-side only (the real SmolLM2-135M tokenizer, no forward): for every held-out task of the split, seed 0 of the
meta-test protocol's sample (`sample_splits(task, 16, 16, 100)`), the batches meta-test builds:
- `k-shot step`: the 16 training examples (one step of the k-shot LoRA run, max_length 256), cut into pieces of at
  most 64 rows (`meta-test --max-rows 64`, the eager path that shares);
- `zero-shot` and `ICL`: the first 32 test examples, sorted by prompt length as `score_examples` sorts them, with
  the 16 demonstrations before each prompt for ICL (max_length 2048), in forwards of at most 2**16 tokens;
- `ICL, per example`: the ICL batch with its common start (the demonstrations) not run once for the batch, only each
  example's prompt once for its candidates (the scoring before the common start was shared).
Per batch, the tokens one row per candidate runs (rows x padded width) and the tokens `token_logprobs` runs where
`sharing_pays` (`shared_tokens`: the batch's common start once where `common_start` runs it, examples x the rest of
their longest shared start, rows x longest own part; SmolLM2 is a Llama, a family that takes shared prompts, so only
the batch's layout decides). Prints a table per task and the totals, and writes
shared_prompts.json to --out. A token count is not a time: the GPU measurement is still to be made.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from zofo.evaluation import icl_demonstrations
from zofo.evaluation.harness import with_demonstrations
from zofo.evaluation.scoring import (
    COMMON_MIN_TOKENS,
    MAX_TOKENS,
    SHARE_LEFT,
    SHARE_MIN_TOKENS,
    CandidateBatch,
    encode_candidates,
    example_pieces,
    shared_tokens,
    sharing_pays,
)
from zofo.meta.protocol import MetaTestProtocol
from zofo.meta.split import read_split
from zofo.models.load import prepare_tokenizer, resolve_source
from zofo.tasks import sample_splits

PROTOCOL = MetaTestProtocol()  # its k-shot sample, dev and scoring batch sizes
N_TEST, MAX_ROWS = 100, 64


def tokens(piece: CandidateBatch) -> tuple[int, int]:
    """(tokens of one row per candidate, tokens run with shared prompts where that is chosen)."""
    whole = piece.input_ids.shape[0] * piece.input_ids.shape[1]
    return whole, shared_tokens(piece) if sharing_pays(piece) else whole


def batch_tokens(tokenizer, examples, max_length: int, max_rows: int | None, max_tokens: int | None,
                 common: bool = True) -> list[int]:
    batch = encode_candidates(tokenizer, examples, max_length)
    batch = batch if common else replace(batch, common=0)
    counted = [tokens(piece) for piece in example_pieces(batch, max_rows, max_tokens)]
    return [sum(whole for whole, _ in counted), sum(run for _, run in counted)]


def task_tokens(tokenizer, task) -> dict[str, list[int]]:
    splits = sample_splits(task, n_train=PROTOCOL.shots, n_dev=PROTOCOL.n_dev, n_test=N_TEST, seed=0)
    test = sorted(splits.test[:PROTOCOL.eval_batch_size], key=lambda e: len(e.prompt))
    demos = icl_demonstrations(splits.train, PROTOCOL.shots, 0)
    icl = sorted(with_demonstrations(test, demos), key=lambda e: len(e.prompt))
    return {"k-shot step": batch_tokens(tokenizer, splits.train, 256, MAX_ROWS, None),
            "zero-shot": batch_tokens(tokenizer, test, 2048, None, MAX_TOKENS),
            "ICL, per example": batch_tokens(tokenizer, icl, 2048, None, MAX_TOKENS, common=False),
            "ICL": batch_tokens(tokenizer, icl, 2048, None, MAX_TOKENS)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="configs/meta/bigbench_split.yaml")
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer (a name zofo loads)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(resolve_source(args.model))))
    split = read_split(args.split, lists=("meta_test",))
    found = {ref.name: task_tokens(tokenizer, split.task(ref)) for ref in split.meta_test}
    kinds = ("k-shot step", "zero-shot", "ICL, per example", "ICL")
    print("| task | " + " | ".join(f"{k}: tokens -> shared" for k in kinds) + " |\n|---|" + "---|" * len(kinds))
    for name, counts in found.items():
        print(f"| {name} | " + " | ".join(f"{counts[k][0]:,} -> {counts[k][1]:,}" for k in kinds) + " |")
    totals = {k: [sum(c[k][i] for c in found.values()) for i in (0, 1)] for k in kinds}
    print("| **total** | " + " | ".join(f"**{t[0]:,} -> {t[1]:,} ({t[0] / t[1]:.2f}x)**" for t in totals.values())
          + " |")
    report = {"split": args.split, "model": args.model, "tasks": found, "totals": totals,
              "bounds": {"share_min_tokens": SHARE_MIN_TOKENS, "share_left": SHARE_LEFT,
                         "common_min_tokens": COMMON_MIN_TOKENS, "max_rows": MAX_ROWS,
                         "max_tokens": MAX_TOKENS}}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "shared_prompts.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
