"""Every method for a few steps on a tiny random model on the GPU (bf16 and fp32): the GPU path runs.

    PYTHONPATH=src python benchmarks/gpu_smoke.py
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tiny import build_tiny_tokenizer, tiny_model  # noqa: E402
from zofo import api  # noqa: E402
from zofo.api import load_config  # noqa: E402

RUNS = [("fo-full", None), ("fo-peft", "lora"), ("fo-peft", "prompt"), ("mezo", None), ("zo-peft", "lora"),
        ("bilevel-zofo", "lora"), ("bilevel-zofo", "prefix"), ("bilevel-zofo", "prompt"), ("bilevel-fo", "lora")]


def write_sst2(folder: Path) -> None:
    """A small SST-2-format folder of made-up sentences (GLUE tsv with a header)."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for name, n in (("train.tsv", 64), ("dev.tsv", 16), ("test.tsv", 16)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            lines.append(f"the movie was {'good' if label else 'bad'} and {rng.choice(['it', 'a'])}\t{label}")
        (folder / name).write_text("\n".join(lines) + "\n")


def main() -> None:
    root = Path(tempfile.mkdtemp())
    tokenizer = build_tiny_tokenizer()
    tiny_model("llama", vocab_size=len(tokenizer)).save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    write_sst2(root / "sst2")
    for dtype in ("bfloat16", "float32"):
        for method, peft in RUNS:
            start = time.time()
            cfg = load_config(None, [
                f"model.name={root / 'tiny'}", f"model.dtype={dtype}", "model.device=cuda", f"train.method={method}",
                "data.task=sst2", f"data.data={root / 'sst2'}", "data.n_train=64", "data.n_dev=16",
                "data.n_test=16", "train.steps=4", "train.batch_size=4", "train.eval_every=2", "train.progress=false",
                "bilevel.lower_steps=2", f"train.output_dir={root / 'runs' / f'{method}-{peft}-{dtype}'}"]
                + ([f"peft.kind={peft}"] if peft else []))
            result = api.train(cfg)
            print(f"{dtype:9s} {method:13s} {peft or '-':7s} test {result['test']['accuracy']:.3f} "
                  f"peak {result['peak_memory_mib'].get('train_step', 0):.0f} MiB  {time.time() - start:.1f} s")
    print("gpu smoke ok" if torch.cuda.is_available() else "ran on CPU")


if __name__ == "__main__":
    main()
