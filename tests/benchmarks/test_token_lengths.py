"""benchmarks/token_lengths.py on the real data with a tiny tokenizer: padding is never counted, and a tokenizer
against itself gives a ratio of 1."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from benchmarks.token_lengths import main, tokens_per_example
from zofo.evaluation.scoring import encode_candidates
from zofo.models.load import prepare_tokenizer
from zofo.tasks import load_task, sample_splits


def test_counts_ignore_padding_and_batching(tiny_model_dir, shared_data):
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    examples = sample_splits(load_task("cb", shared_data / "superglue/CB"), 1000, 500, 1000, seed=0).train[:20]
    alone = sum(int(encode_candidates(tokenizer, [e], 256).attention_mask.sum()) for e in examples)
    assert tokens_per_example(tokenizer, examples) == alone / len(examples)


def test_a_tokenizer_against_itself_gives_ratio_one(tmp_path, tiny_model_dir, shared_data):
    report = main([str(tiny_model_dir), str(tiny_model_dir), "--tasks", "copa", "sst2", "--data-root",
                   str(shared_data), "--examples", "32", "--out", str(tmp_path / "lengths.json")])
    saved = json.loads((tmp_path / "lengths.json").read_text())
    assert saved == report and set(report["tasks"]) == {"copa", "sst2"}
    assert all(row["a"] == row["b"] > 0 and row["ratio"] == 1 for row in report["tasks"].values())
