"""`zofo eval`: zero-shot or k-shot ICL evaluation of a model on a task; prints metrics, writes JSON.

    zofo eval --model smollm2-135m --task sst2 --data /data/sst2 [--shots 16] [--n-test 1000]

The test set is the one `sample_splits` gives for (--n-train, --n-dev, --n-test, --seed): the same
examples a training run with those settings and `--set data.seed=SEED` is tested on (`zofo train --seed` is the
training seed, not the data's). ICL demonstrations come from its train split, drawn with the same seed.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from zofo.cli.usage import check_device_flag, check_dtype_flag, check_output_file, usage_errors
from zofo.errors import ZofoError


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `zofo eval`."""
    parser.add_argument("--model", default="smollm2-135m", help="alias, folder, GGUF file or hub id")
    parser.add_argument("--task", required=True, help="e.g. sst2, rte, bigbench:strategyqa")
    parser.add_argument("--data", default=None, help="local copy in the official format (else the hub)")
    parser.add_argument("--template", default=None, help="prompt template name (default: the task's first)")
    parser.add_argument("--n-test", type=int, default=1000, help="test examples (MeZO: 1000)")
    parser.add_argument("--n-train", type=int, default=1000, help="train split size (demonstration pool)")
    parser.add_argument("--n-dev", type=int, default=500, help="dev split size")
    parser.add_argument("--shots", type=int, default=0, help="k in-context demonstrations (0: zero-shot)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per forward")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per row (prompt left-truncated)")
    parser.add_argument("--seed", type=int, default=0, help="the data split's seed (zofo train's data.seed, not its "
                                                             "--seed) and the demonstrations' draw")
    parser.add_argument("--dtype", default="float32",
                        help="float32, tf32 (float32 weights, TF32 matmuls on CUDA), bfloat16 or float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--output", default=None, help="result JSON (default runs/eval-<task>-<time>.json)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


#: option -> the least value it takes
LEAST = {"n_test": 1, "n_train": 0, "n_dev": 0, "shots": 0, "batch_size": 1, "max_length": 1}


def check_eval_arguments(args: argparse.Namespace) -> None:
    """Refuse an option out of its range before anything loads."""
    for name, least in LEAST.items():
        if getattr(args, name) < least:
            flag = "--" + name.replace("_", "-")
            raise ZofoError(f"{flag} must be >= {least}, got {getattr(args, name)}", f"give {flag} {least} or more")
    check_dtype_flag(args.dtype)
    if args.shots > args.n_train:
        raise ZofoError(f"--shots {args.shots} with --n-train {args.n_train}: the demonstrations are drawn from the "
                        "train split", f"give --n-train {args.shots} or more")
    check_output_file(args.output, "--output", (".json",), replaces=is_eval_result)
    from zofo.tasks import check_task_name  # its loaders: only once a command runs

    check_task_name(args.task, "--task")
    check_device_flag(args.device, args.dtype)


def is_eval_result(file: Path) -> bool:
    """Whether ``file`` holds an earlier `zofo eval` result (which --output may replace)."""
    try:
        result = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(result, dict) and {"model", "task", "metrics", "protocol"} <= set(result)


def output_path(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    task = re.sub(r"[^A-Za-z0-9_.-]+", "-", args.task)
    return Path("runs") / f"eval-{task}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def run_eval(args: argparse.Namespace) -> dict:
    """Evaluate as the arguments say; print `metric: value` lines; write and return the result."""
    from zofo.evaluation.harness import evaluate, icl_demonstrations  # torch: not for `zofo --help`
    from zofo.models.device import resolve_device
    from zofo.models.load import load_model
    from zofo.tasks import load_task, sample_splits

    if args.no_progress:  # transformers' own bars too (loading weights)
        from transformers.utils import logging

        logging.disable_progress_bar()
    with usage_errors():  # a data path, a template or sizes the task cannot give: the command's fault
        task = load_task(args.task, args.data, args.template)
        splits = sample_splits(task, n_train=args.n_train, n_dev=args.n_dev, n_test=args.n_test, seed=args.seed)
    demos = icl_demonstrations(splits.train, args.shots, args.seed) if args.shots else None
    device = resolve_device(args.device or "auto")
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=device)
    started = time.time()
    metrics = evaluate(model, tokenizer, task, splits.test, batch_size=args.batch_size, demonstrations=demos,
                       progress=not args.no_progress, max_length=args.max_length)
    for key, value in metrics.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    result = {"model": args.model, "task": task.name, "template": task.template, "data": args.data,
              "shots": len(demos) if demos else 0,  # fewer than --shots where the task's train split is smaller
              "seed": args.seed, "dtype": args.dtype, "device": device,
              "protocol": splits.protocol, "sizes": {"train": len(splits.train), "dev": len(splits.dev),
                                                     "test": len(splits.test)},
              "metrics": metrics, "seconds": round(time.time() - started, 2)}
    path = output_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return result
