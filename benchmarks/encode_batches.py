"""Host time to encode a training batch (tokenize + pad), first epoch against later ones (row cache).

    PYTHONPATH=src python benchmarks/encode_batches.py --model ~/.cache/zofo/models/smollm2-135m \
        --data-root ../shared/data --out benchmarks/results/encode-cpu-DATE

SmolLM2's tokenizer, batches of 16 training examples (all their candidates), 50 batches per epoch, two epochs
over the same examples as training draws them; writes encode_batches.json and .md under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

from transformers import AutoTokenizer

from zofo.evaluation.scoring import encode_candidates
from zofo.tasks import load_task, sample_splits

TASKS = {"sst2": "sst2", "boolq": "superglue/BoolQ", "rte": "superglue/RTE"}


def epoch_ms(tokenizer, examples, batches: int = 50, size: int = 16, max_length: int = 256) -> float:
    batches = min(batches, len(examples) // size)
    start = time.perf_counter()
    for i in range(batches):
        encode_candidates(tokenizer, examples[i * size:(i + 1) * size], max_length)
    return (time.perf_counter() - start) / batches * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="folder with the tokenizer (e.g. a converted SmolLM2)")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = []
    for name, folder in TASKS.items():
        task = load_task(name, str(Path(args.data_root) / folder))
        train = sample_splits(task, n_train=800, n_dev=50, n_test=50, seed=0).train
        first, later = epoch_ms(tokenizer, train), epoch_ms(tokenizer, train)
        rows.append({"task": name, "first_epoch_ms": first, "later_epoch_ms": later})
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.processor()
              or platform.machine(), "cpus": os.cpu_count(), "batch": 16, "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "encode_batches.json").write_text(json.dumps(result, indent=1))
    lines = ["# Host time to encode a batch of 16", "", f"`{' '.join(['python', *os.sys.argv])}`  ",
             f"{result['date']}, {result['cpus']} CPUs", "",
             "| task | first epoch ms / batch | later epochs ms / batch |", "|---|---|---|"]
    lines += [f"| {r['task']} | {r['first_epoch_ms']:.2f} | {r['later_epoch_ms']:.2f} |" for r in rows]
    Path(args.out, "encode_batches.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
