"""Zero-shot and 16-shot ICL accuracy of SmolLM2-135M on the MeZO-style suite (the no-training baselines).

    python benchmarks/eval_baselines.py --device cuda --n-test 1000 --out benchmarks/results
    python benchmarks/eval_baselines.py --device cpu --n-test 20 --tasks sst2 rte   # smoke run

Tasks read the local copies in ../shared/data (--data-root); sampling is `sample_splits` with the
default 1000/500/1000 sizes and --seed, so the test sets are those of the training runs; demonstrations
come from the train split. Writes baselines-<time>.json and a markdown table beside it, after every task.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from zofo.evaluation import evaluate, icl_demonstrations
from zofo.models.load import load_model
from zofo.tasks import load_task, sample_splits

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
SUITE = {  # task name -> data path relative to the data root
    "sst2": "sst2", "rte": "superglue/RTE", "cb": "superglue/CB", "boolq": "superglue/BoolQ",
    "copa": "superglue/COPA", "wic": "superglue/WiC", "wsc": "superglue/WSC",
    "bigbench:strategyqa": "bigbench", "bigbench:winowhy": "bigbench",
}


def parse_args() -> argparse.Namespace:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 16])
    parser.add_argument("--tasks", nargs="+", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    return parser.parse_args()


def run_task(model, tokenizer, name: str, args: argparse.Namespace) -> dict:
    """{shots: metrics} for one task."""
    task = load_task(name, args.data_root / SUITE[name])
    splits = sample_splits(task, n_test=args.n_test, seed=args.seed)
    results = {"protocol": splits.protocol, "n_train": len(splits.train)}
    for shots in args.shots:
        demos = icl_demonstrations(splits.train, shots, args.seed) if shots else None
        started = time.time()
        metrics = evaluate(model, tokenizer, task, splits.test, batch_size=args.batch_size,
                           demonstrations=demos)
        results[str(shots)] = {**metrics, "seconds": round(time.time() - started, 1)}
        print(f"{name} shots={shots}: accuracy {metrics['accuracy']:.3f} (n={metrics['n']})", flush=True)
    return results


def markdown(results: dict, args: argparse.Namespace, command: str) -> str:
    header = "| task | " + " | ".join(f"{k}-shot" for k in args.shots) + " | n test | split protocol |"
    lines = [f"# {args.model} no-training baselines (accuracy)", "", f"`{command}`", "", header,
             "|" + "---|" * (len(args.shots) + 3)]
    for name, row in results.items():
        cells = " | ".join(f"{row[str(k)]['accuracy']:.3f}" for k in args.shots)
        lines.append(f"| {name} | {cells} | {row[str(args.shots[0])]['n']} | {row['protocol']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import sys

    args = parse_args()
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    command = "python " + " ".join(sys.argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results: dict = {}
    for name in args.tasks:  # written after every task: a run stopped early keeps what it finished
        results[name] = run_task(model, tokenizer, name, args)
        record = {"command": command, "config": config, "results": results}
        (args.out / f"baselines-{stamp}.json").write_text(json.dumps(record, indent=2) + "\n")
        (args.out / f"baselines-{stamp}.md").write_text(markdown(results, args, command))
    print(f"wrote {args.out / f'baselines-{stamp}.md'}")


if __name__ == "__main__":
    main()
