"""State memory of the ZO update rules: the buffers each rule allocates, per parameter and against the weights.

    PYTHONPATH=src python benchmarks/zo_state_memory.py [--out DIR]

Every rule's ``init`` runs on the model's real parameter list, built on the meta device (shapes only,
nothing allocated): SmolLM2-135M and the OPT-1.3B shape of benchmarks/zo_step.py.  The bytes are those of
the buffers ``init`` returns; weights are counted at 2 bytes (bf16).  Writes zo_state_memory.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import torch

from zofo import zo

RULES = {"ZOSGD": zo.ZOSGD(), "ZOMomentum": zo.ZOMomentum(), "ZOAdam": zo.ZOAdam()}
SHAPES = {
    "smollm2-135m": ("llama", dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                   intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True)),
    "opt-1.3b": ("opt", dict(hidden_size=2048, num_hidden_layers=24, ffn_dim=8192, num_attention_heads=32,
                             vocab_size=50272, word_embed_proj_dim=2048, max_position_embeddings=2048)),
}


def meta_model(name: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    kind, kw = SHAPES[name]
    with torch.device("meta"):
        if kind == "opt":
            return OPTForCausalLM(OPTConfig(**kw)).to(torch.bfloat16)
        return LlamaForCausalLM(LlamaConfig(**kw)).to(torch.bfloat16)


def state_bytes(rule: zo.ZOUpdate, params: dict[str, torch.nn.Parameter]) -> int:
    state = rule.init(params)
    return sum(t.numel() * t.element_size() for bufs in state.buffers.values() for t in bufs.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    rows = []
    for model_name in SHAPES:
        params = dict(meta_model(model_name).named_parameters())  # tied weights counted once
        n = sum(p.numel() for p in params.values())
        for rule_name, rule in RULES.items():
            b = state_bytes(rule, params)
            rows.append({"model": model_name, "rule": rule_name, "params": n, "state_bytes": b,
                         "bytes_per_param": b / n, "state_over_bf16_weights": b / (2 * n)})
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zo_state_memory.json").write_text(json.dumps(result, indent=1))
    lines = ["# State memory of the ZO update rules", "",
             f"`PYTHONPATH=src python benchmarks/zo_state_memory.py {' '.join(os.sys.argv[1:])}`  ", result["date"], "",
             "| model | parameters | rule | state MiB | bytes / parameter | state / bf16 weights |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['rule']} | {r['state_bytes'] / 2**20:.0f} | "
              f"{r['bytes_per_param']:.1f} | {r['state_over_bf16_weights']:.1f}x |" for r in rows]
    (args.out / "zo_state_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
