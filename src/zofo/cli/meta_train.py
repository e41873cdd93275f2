"""`zofo meta-train`: Bilevel ZOFO over the meta-train tasks of a split file (per-task PEFT blocks, one ZO estimate
of the summed objective per outer step), its first-order twin, or a multi-task baseline; docs/META.md.

    zofo meta-train --split configs/meta/bigbench_split.yaml --model smollm2-135m --out runs/meta-zofo
    zofo meta-train --split configs/meta/bigbench_split.yaml --method fo-peft --out runs/meta-fo-lora
    zofo meta-train --resume runs/meta-zofo --steps 2000          # continue (bit-identical to an unbroken run)
    zofo meta-test --split configs/meta/bigbench_split.yaml --model runs/meta-zofo --out runs/meta-test-zofo
"""

from __future__ import annotations

import argparse
import dataclasses

from zofo.cli.usage import usage_errors
from zofo.errors import ZofoError

#: option -> help (the defaults are `MetaTrainConfig`'s)
HELP = {
    "model": "backbone: alias, model folder, GGUF file or hub id",
    "out": "run folder to write (final/backbone.safetensors, final/trajectory.json, backbone/, checkpoint/); "
           "needed unless --resume",
    "method": "bilevel-zofo (Alg. 2) | bilevel-fo (Alg. 1) | fo-peft | fo-full | mezo (multi-task baselines)",
    "peft": "lora | prefix | prompt", "r": "LoRA rank", "alpha": "LoRA alpha",
    "num_virtual_tokens": "prefix / prompt length", "tasks_per_step": "T: tasks sampled per outer step",
    "lower_steps": "K: FO steps on each z_i per outer step", "lam": "penalty weight lambda",
    "upper": "per-task upper-level examples D_f", "lower": "per-task lower-level examples D_g",
    "n_dev": "per-task dev examples (held out from both levels)", "lr": "backbone learning rate",
    "lr_upper": "learning rate of p_i (and of the shared LoRA of fo-peft)", "lr_lower": "learning rate of z_i",
    "eps": "ZO perturbation scale", "seed": "run seed (task sampling, batches, ZO directions)",
    "steps": "outer steps", "max_seconds": "wall-clock budget in seconds (training stops at the first step past it)",
    "batch_size": "examples per batch",
    "max_rows": "rows (examples x candidates) a forward takes at most: a batch is cut into pieces of whole "
                "examples whose gradients accumulate (unset: whole batches)",
    "max_length": "tokens per sequence",
    "eval_batch_size": "examples per evaluation batch", "eval_every": "dev period in steps (0: before and after)",
    "save_every": "checkpoint period in steps (0: at the end)", "log_every": "log period in steps",
    "device": "auto | cpu | cuda | cuda:N", "dtype": "float32 | tf32 | bfloat16 | float16",
    "bigbench_root": "where bigbench:NAME resolves",
}


def add_meta_train(sub) -> None:
    """Register the subcommand on the `zofo` parser's subparsers."""
    from zofo.meta.options import MetaTrainConfig

    p = sub.add_parser("meta-train", help="meta-train a backbone over a split file's meta-train tasks",
                       description="Bilevel ZOFO over many tasks: per-task FO PEFT blocks (z_i, p_i), one ZO "
                                   "estimate of the backbone's gradient of the summed penalised objective per step.")
    p.add_argument("--split", default=None, help="split file whose meta_train tasks are trained on")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue the meta-train run in RUN from its "
                                                                 "checkpoint (its own options; --steps may grow)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for field in dataclasses.fields(MetaTrainConfig):
        if field.name in HELP:
            kind = field.type.removesuffix(" | None")
            default = f" (default {field.default})" if field.default is not None else ""
            p.add_argument(f"--{field.name.replace('_', '-')}", type={"int": int, "float": float}.get(kind, str),
                           default=None, help=HELP[field.name] + default)
    p.set_defaults(run=run_meta_train)


def run_meta_train(args: argparse.Namespace) -> int:
    from zofo.meta.metarun import checked_split, meta_train, resumed
    from zofo.meta.options import MetaTrainConfig
    from zofo.run.distributed import launched_rank

    given = {name: getattr(args, name) for name in HELP if getattr(args, name) is not None}
    if args.no_progress:
        given["progress"] = False
    with usage_errors():  # the command as given: refused before anything loads
        if not args.resume and not args.split:
            raise ZofoError("meta-train needs --split FILE (or --resume RUN)",
                            "e.g. --split configs/meta/bigbench_split.yaml")
        if args.resume and args.split:
            raise ZofoError("--split with --resume: a resumed run keeps the split it started with",
                            "drop --split, or start a new run with --out")
        cfg = resumed(args.resume, **given) if args.resume else MetaTrainConfig(split=args.split, **given)
        split = checked_split(cfg, resume_run=bool(args.resume))
    result = meta_train(cfg, resume_run=bool(args.resume), split=split)
    if launched_rank() != 0:  # under torchrun, rank 0 alone reports
        return 0
    print(f"meta-train {result.get('method')}: {result.get('steps')} steps, {result.get('train_seconds')} s")
    print(f"run folder: {result['run_dir']}  (zofo meta-test --model {result['run_dir']} ...)")
    return 0
