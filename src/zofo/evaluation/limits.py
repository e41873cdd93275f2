"""How much one scoring forward takes at most, by default (no torch here: option defaults read it)."""

# Tokens (rows x padded width) in one scoring forward, by default: memory is proportional to them, speed hardly grows
# past this. Meta-test's ICL batch (32 examples x 10 candidates x 2000 tokens) on an H100 (benchmarks/results/
# gpu-2026-12-06/scoring-tokens/) took 45.2 GiB above the weights in one forward (SmolLM2-135M, float32), 23.2 (bf16),
# 57.7 (a Qwen2.5-1.5B shape, bf16); in forwards of at most 2**16 tokens 4.2, 2.2 and 5.4 GiB, and 1.2%, 7.6% and
# -0.4% more time.
MAX_TOKENS = 2**16
