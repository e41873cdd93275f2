"""`zofo meta-test`: a backbone on held-out tasks, zero-shot, with k demonstrations and with a fresh k-shot LoRA,
over several seeds of the k-shot sample (protocol: docs/META.md); prints one table and writes it to --out.

    zofo meta-test --split configs/meta/bigbench_split.yaml --model smollm2-135m --out runs/meta-test-base
    zofo meta-test ../shared/data/bigbench/logical_deduction my_tasks/ --model runs/RUN --out runs/mt
    zofo meta-test --split configs/meta/bigbench_split.yaml --model runs/RUN --workers 8   # 8 units at once
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from zofo.cli.usage import check_device_flag, usage_errors
from zofo.errors import ZofoError
from zofo.meta.protocol import MetaTestProtocol

DEFAULTS = MetaTestProtocol()


def add_meta_test(sub) -> None:
    """Register the subcommand on the `zofo` parser's subparsers."""
    p = sub.add_parser("meta-test", help="evaluate a backbone on held-out tasks: zero-shot, ICL, k-shot LoRA",
                       description="Meta-test a backbone on every task of a split file's meta_test list and/or the "
                                   "tasks given: zero-shot, k demonstrations, and a fresh LoRA trained on k "
                                   "examples, mean ± std over seeds of the k-shot sample.")
    p.add_argument("tasks", nargs="*", metavar="TASK",
                   help="a BIG-bench task folder or a folder of them, bigbench:NAME, a MetaICL jsonl file, or a "
                        "registered task name (any task, in a split file or not)")
    p.add_argument("--split", default=None, help="split file whose meta_test tasks are tested "
                                                 "(e.g. configs/meta/bigbench_split.yaml)")
    p.add_argument("--model", default="smollm2-135m", help="backbone: alias, model folder, GGUF file, hub id, or a "
                                                         "run folder whose final/backbone.safetensors is used")
    p.add_argument("--out", default=None, help="output folder (default runs/meta-test-<time>); the same folder "
                                               "again continues an interrupted meta-test")
    p.add_argument("--bigbench-root", default=None, help="where bigbench:NAME resolves (else $ZOFO_BIGBENCH, the "
                                                         "split file's bigbench_root, ../shared/data/bigbench)")
    for name in ("shots", "n_dev", "n_test", "steps", "eval_every", "batch_size", "r", "alpha", "max_length",
                 "eval_batch_size", "eval_max_tokens"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(DEFAULTS, name),
                       help=f"protocol (default {getattr(DEFAULTS, name)})")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help=f"LoRA AdamW learning rate (default {DEFAULTS.lr})")
    p.add_argument("--max-rows", type=int, default=None, help="rows one k-shot LoRA forward takes at most: batches "
                                                              "in pieces, gradients accumulated, eager steps "
                                                              "(default: whole batches, CUDA graphs)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULTS.seeds), help="k-shot sample seeds")
    p.add_argument("--dtype", default="float32",
                   help="float32, tf32 (float32 weights, TF32 matmuls on CUDA), bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=1,
                   help="task-seed units run at once, each in its own process (default 1); one GPU gains little "
                        "(1.30x with 6 workers on an H100, docs/RESULTS.md section 26). With --device auto or cuda "
                        "and several GPUs, worker W takes GPU W mod their number")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run_meta_test)


def task_refs(args: argparse.Namespace) -> list:
    """The split file's meta_test tasks (the file checked whole, its meta_test tasks loaded), then the given ones."""
    from zofo.meta.pool import bigbench_root, resolve
    from zofo.meta.split import read_split

    if not args.split and not args.tasks:
        raise ZofoError("meta-test needs tasks", "give --split FILE and/or task folders or names")
    refs = read_split(args.split, args.bigbench_root, lists=("meta_test",)).meta_test if args.split else []
    root = bigbench_root(args.bigbench_root)
    for i, entry in enumerate(args.tasks, start=1):
        refs += resolve(entry, root, f"argument {i} ({entry})")
    return refs


def run_meta_test(args: argparse.Namespace) -> int:
    from zofo.meta.metatest import check_out_folder, meta_test
    from zofo.meta.report import table_text
    from zofo.meta.workers import check as check_workers

    fields = {name: getattr(args, name) for name in ("shots", "n_dev", "n_test", "steps", "eval_every",
                                                     "batch_size", "r", "alpha", "max_length", "eval_batch_size",
                                                     "eval_max_tokens", "lr", "max_rows")}
    with usage_errors():  # the protocol and the tasks as given: refused before anything runs
        protocol = MetaTestProtocol(seeds=tuple(args.seeds), **fields)
        protocol.check()
        check_workers(args.workers, as_worker=False)
        check_device_flag(args.device, args.dtype)
        refs = task_refs(args)
        out = Path(args.out or Path("runs") / f"meta-test-{time.strftime('%Y%m%d-%H%M%S')}")
        check_out_folder(out)
    report = meta_test(refs, args.model, protocol, out, device=args.device, dtype=args.dtype,
                       progress=not args.no_progress, workers=args.workers)
    print(table_text(report))
    print(f"wrote {out / 'meta_test.json'} and {out / 'meta_test.md'}")
    return 0
