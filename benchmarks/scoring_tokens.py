"""Scoring memory and time against the tokens one forward takes: why `zofo.evaluation.limits.MAX_TOKENS` is 2**16.

    PYTHONPATH=src python benchmarks/scoring_tokens.py smol:float32 smol:bfloat16 qwen:bfloat16

The batch is meta-test's ICL case that asked for 45 GB: 32 examples x 10 candidates, rows of 2000 tokens (every other
row ending in 5 padding tokens, a 3-token candidate at the end), scored as `score_examples` scores a batch: cut into
pieces of whole examples (`example_pieces` with a token bound), each piece uploaded and scored. Random weights of
published shapes (SmolLM2-135M; Qwen2.5-1.5B), no_grad. Prints one markdown table per model and dtype: per bound,
the forwards, the allocator's peak above the weights, and the median of 3 passes over the batch. Needs CUDA.
Results: benchmarks/results/gpu-2026-12-06/scoring-tokens/.
"""

from __future__ import annotations

import sys
import time

import torch
import transformers

from zofo.evaluation.scoring import CandidateBatch, candidate_scores, example_pieces

EXAMPLES, CANDIDATES, LENGTH = 32, 10, 2000
BOUNDS = (2**13, 2**14, 2**15, 2**16, 2**17, 2**18, None)
#: family, hidden, layers, heads, key-value heads, MLP width, vocabulary
SHAPES = {"smol": ("Llama", 576, 30, 9, 3, 1536, 49152), "qwen": ("Qwen2", 1536, 28, 12, 2, 8960, 151936)}


def random_model(shape: str, dtype: str) -> torch.nn.Module:
    family, hidden, layers, heads, kv_heads, mlp, vocab = SHAPES[shape]
    config = getattr(transformers, family + "Config")(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        intermediate_size=mlp, vocab_size=vocab)
    return getattr(transformers, family + "ForCausalLM")(config).to("cuda", getattr(torch, dtype)).eval()


def icl_batch(vocab: int) -> CandidateBatch:
    """32 examples x 10 candidates of 2000 tokens, every other row with 5 padding tokens, 3 answer tokens a row."""
    rows = EXAMPLES * CANDIDATES
    attention = torch.ones(rows, LENGTH, dtype=torch.long)
    attention[1::2, -5:] = 0
    target = torch.zeros(rows, LENGTH, dtype=torch.long)
    target[:, -3:] = 1
    row_example = torch.arange(EXAMPLES).repeat_interleave(CANDIDATES)
    return CandidateBatch(torch.randint(3, vocab, (rows, LENGTH)), attention, target, row_example,
                          torch.arange(CANDIDATES).repeat(EXAMPLES), torch.zeros(EXAMPLES, dtype=torch.long),
                          torch.full((EXAMPLES,), CANDIDATES))


def measure(model: torch.nn.Module, batch: CandidateBatch, bound: int | None) -> tuple[int, float, float] | None:
    """(forwards, peak GiB above what was allocated, median seconds of 3 passes); None if out of memory."""
    pieces = example_pieces(batch, None, bound)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before, seconds = torch.cuda.memory_allocated(), []
    try:
        with torch.no_grad():
            for _ in range(3):
                start = time.perf_counter()
                for piece in pieces:
                    candidate_scores(model, piece.to("cuda")).cpu()
                seconds.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return None
    return len(pieces), (torch.cuda.max_memory_allocated() - before) / 2**30, sorted(seconds)[1]


def main(specs: list[str]) -> None:
    for spec in specs:
        shape, dtype = spec.split(":")
        model = random_model(shape, dtype)
        batch = icl_batch(SHAPES[shape][-1])
        print(f"\n{torch.cuda.get_device_name()} {spec} {EXAMPLES * CANDIDATES}x{LENGTH}\n"
              "| max_tokens | forwards | peak GiB | s | tokens/s |\n|---|---|---|---|---|")
        for bound in BOUNDS:
            found = measure(model, batch, bound)
            if found is None:
                print(f"| {bound} | | out of memory | | |")
                continue
            forwards, peak, seconds = found
            rate = EXAMPLES * CANDIDATES * LENGTH / seconds
            print(f"| {bound} | {forwards} | {peak:.2f} | {seconds:.3f} | {rate:,.0f} |")
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
