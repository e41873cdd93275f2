"""Command line: argv -> config -> api. Nothing imports this module.

    zofo train --method bilevel-zofo --peft lora --model smollm2-135m --task sst2 --data DIR --steps 500
    zofo eval  --model smollm2-135m --task sst2 --data DIR
    zofo convert MODEL.gguf OUT_DIR
    zofo plot RUN_DIR
    zofo config [--config FILE] [--set a.b=c ...]     (print the resolved config)
    zofo replay RUN_DIR

Exit status: 0 done; 1 an error while running (a file that cannot be read, ...), printed as one line; 2 a usage
error, refused before anything ran (a bad flag or config value, a run folder that holds a run); 130 stopped by
Ctrl-C (143 by SIGTERM), a training run after saving its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import warnings

from zofo.cli.usage import Parser, check_device_flag, check_dtype_flag, check_output_file, usage_errors
from zofo.errors import UsageError, ZofoError, ZofoWarning
from zofo.run.interrupt import TrainingInterrupted, stacks_on_request

#: flag -> (config key path, type, help)
TRAIN_FLAGS = {
    "--method": ("train.method", str, "a registered method, e.g. bilevel-zofo, mezo, fo-peft, icl (an unknown "
                                      "name is refused with the list of them all)"),
    "--peft": ("peft.kind", str, "lora | prefix | prompt, for the methods that train a PEFT module (unset, "
                                 "null in `zofo config`: lora)"),
    "--model": ("model.name", str, "alias (smollm2-135m), model folder, .gguf file or hub id"),
    "--task": ("data.task", str, "task name, e.g. sst2, rte, bigbench:strategyqa, bigbench"),
    "--data": ("data.data", str, "folder or file of the task's data in its official format"),
    "--template": ("data.template", str, "alternative prompt template by name"),
    "--steps": ("train.steps", int, "training steps (outer iterations for bilevel methods)"),
    "--batch-size": ("train.batch_size", int, "examples per batch (paper: 16)"),
    "--lr": ("optim.lr", float, "backbone learning rate (ZO methods, FO full fine-tuning)"),
    "--lr-upper": ("optim.lr_upper", float, "learning rate of the upper PEFT copy p (and of FO-PEFT)"),
    "--lr-lower": ("optim.lr_lower", float, "learning rate of the lower PEFT copy z"),
    "--lam": ("bilevel.lam", float, "penalty weight lambda (paper: 1e4)"),
    "--lower-steps": ("bilevel.lower_steps", int, "K: lower steps per upper step (paper: 10)"),
    "--eps": ("zo.eps", float, "ZO perturbation scale (paper: 1e-3)"),
    "--direction": ("zo.direction", str, "ZO directions: gaussian | gaussian16 | rademacher"),
    "--theta-update": ("zo.rule", str, "ZO update rule for theta: sgd | momentum | adam"),
    "--schedule": ("optim.schedule", str, "learning-rate schedule: constant | linear | cosine"),
    "--shots": ("icl.shots", int, "demonstrations for in-context learning"),
    "--n-train": ("data.n_train", int, "training examples sampled (MeZO: 1000)"),
    "--n-dev": ("data.n_dev", int, "dev examples sampled (MeZO: 500)"),
    "--n-test": ("data.n_test", int, "test examples sampled (MeZO: 1000)"),
    "--eval-every": ("train.eval_every", int, "dev evaluation period in steps (0: only before and after)"),
    "--save-every": ("train.save_every", int, "checkpoint period in steps (0: only at the end)"),
    "--seed": ("train.seed", int, "run seed (ZO directions, batch order)"),
    "--dtype": ("model.dtype", str, "float32 | tf32 | bfloat16 | float16"),
    "--device": ("model.device", str, "auto | cpu | cuda | cuda:N"),
    "--output-dir": ("train.output_dir", str, "run folder (default runs/<method>-<task>-<time>)"),
    "--resume": ("train.resume", str, "RUN/checkpoint of a run to continue, with the run's own settings"),
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module's docstring)."""
    parser = build_parser()
    warnings.showwarning = _show_warning
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # told by the command's own parser, which knows its flags
            parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
        if not hasattr(args, "run"):
            parser.error("choose a command: " + ", ".join(COMMANDS))
        _check_launch(args)
        return args.run(args)
    except ZofoError as err:
        print(f"zofo: error: {_one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except TrainingInterrupted as stop:  # a new line: the signal may have come in the middle of a progress bar
        print(f"\nzofo: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("\nzofo: interrupted", file=sys.stderr)
        return 130
    finally:
        _leave_group()


def _leave_group() -> None:
    """A torchrun rank leaves its process group before it exits (`zofo.run.distributed.leave_group`); a command
    that never imported torch.distributed has none to leave."""
    if "torch.distributed" in sys.modules:
        from zofo.run.distributed import leave_group

        leave_group()


#: the commands that run over several processes (torchrun); the others run in one
DATA_PARALLEL = ("train", "meta-train")


def _check_launch(args: argparse.Namespace) -> None:
    """`zofo train` and `zofo meta-train` alone run over several processes (torchrun); the others run in one."""
    if args.command not in DATA_PARALLEL and _launched_world() > 1:
        raise UsageError(f"zofo {args.command} runs in one process, not under torchrun (WORLD_SIZE > 1)",
                         "launch it with python or zofo directly; only zofo train and zofo meta-train train over "
                         "several processes")


def _launched_world() -> int:
    """Processes in this launch (torchrun's WORLD_SIZE; 1 otherwise), read without importing torch."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """zofo's own warnings (a renamed config key, `ZofoWarning`) as one line, without the source line that raised
    them."""
    if issubclass(category, ZofoWarning) or (category is FutureWarning and "config key" in str(message)):
        print(f"zofo: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _one_line(err: Exception) -> str:
    """The message on one line (a wrapped library error may span several)."""
    return " ".join(str(err).split())


COMMANDS = ("train", "eval", "convert", "plot", "replay", "config", "meta-train", "meta-test")


def build_parser() -> Parser:
    parser = Parser(
        prog="zofo", description="Fine-tune language models with Bilevel ZOFO (zeroth-order backbone + "
                                 "first-order PEFT) and its baselines.")
    sub = parser.add_subparsers(title="commands", dest="command")
    _add_train(sub)
    _add_eval(sub)
    _add_convert(sub)
    _add_plot(sub)
    _add_replay(sub)
    _add_config(sub)
    from zofo.cli.meta_test import add_meta_test  # meta-learning: zofo/cli/meta_test.py
    add_meta_test(sub)
    from zofo.cli.meta_train import add_meta_train  # zofo/cli/meta_train.py
    add_meta_train(sub)
    parser.commands = sub.choices
    return parser


def _add_config_flags(parser: argparse.ArgumentParser, flags: dict) -> None:
    parser.add_argument("--config", help="YAML config file (its sections as `zofo config` prints them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set zo.q=2 (repeatable)")
    for flag, (key, kind, text) in flags.items():
        parser.add_argument(flag, type=kind, default=None, help=f"{text} [{key}]")


def config_from_args(args: argparse.Namespace, flags: dict):
    """YAML file, then flags, then --set overrides (last wins)."""
    from zofo.run.options import load_config

    overrides = []
    for flag, (key, kind, _) in flags.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:  # a text flag is taken as written, not read as YAML ('run #2' is not 'run')
            overrides.append(f"{key}={json.dumps(value) if kind is str else value}")
    return load_config(args.config, overrides + args.set)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model with one method and evaluate it",
                       description="Fine-tune with any method; dev picks the checkpoint, test is reported.")
    _add_config_flags(p, TRAIN_FLAGS)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in the run folder: its files are deleted once the new run has loaded its "
                        "data and model (without it, a folder that holds a run is refused; a folder that holds "
                        "anything a run does not write always is)")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from zofo import api
    from zofo.run.distributed import launched_rank

    with usage_errors():
        cfg = api.prepared(config_from_args(args, TRAIN_FLAGS), args.overwrite)
    result = api.train(cfg, args.overwrite)
    if launched_rank() != 0:  # under torchrun, rank 0 alone reports
        return 0
    for key, value in result["test"].items():
        print(f"test {key}: {value:.4f}" if isinstance(value, float) else f"test {key}: {value}")
    if result["steps"]:
        print(f"training: {result['steps']} steps, {result['train_seconds']:.1f} s "
              f"({result['train_seconds_without_evaluation']:.1f} s without evaluations)")
    print(f"run folder: {result['run_dir']}")
    return 0


def _add_eval(sub) -> None:
    from zofo.cli.eval import add_eval_arguments

    p = sub.add_parser("eval", help="evaluate a model on a task (zero-shot or in-context)",
                       description="Score a model on a task's test split: accuracy, or F1 / exact match.")
    add_eval_arguments(p)
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from zofo.cli.eval import check_eval_arguments, run_eval

    with usage_errors():
        check_eval_arguments(args)
    run_eval(args)
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="save a model (e.g. a GGUF file) as a plain safetensors folder",
                       description="Dequantise and re-wrap once, so later loads take well under a second.")
    p.add_argument("source", help="alias, .gguf file, folder or hub id")
    p.add_argument("out_dir", help="folder to write (config.json, model.safetensors, tokenizer)")
    p.add_argument("--dtype", default="float32", help="dtype of the saved weights")
    p.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from zofo.models.load import check_convert_target, convert

    with usage_errors():
        check_dtype_flag(args.dtype)
        check_convert_target(pathlib.Path(args.out_dir))
    print(f"saved {convert(args.source, args.out_dir, dtype=args.dtype)}")
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw loss and dev curves of a run (PNG)",
                       description="Loss and dev metric against steps and wall-clock time.")
    p.add_argument("run_dirs", nargs="+", help="run folders (with log.jsonl)")
    p.add_argument("--out", default=None, help="PNG file (default RUN_DIR/curves.png)")
    p.set_defaults(run=_run_plot)


#: the files `zofo plot` writes (matplotlib's formats that hold a figure as it is drawn)
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _run_plot(args: argparse.Namespace) -> int:
    from zofo.run.plotting import plot_runs

    with usage_errors():
        check_output_file(args.out, "--out", IMAGE_SUFFIXES)
    print(f"wrote {plot_runs(args.run_dirs, args.out)}")
    return 0


def _add_replay(sub) -> None:
    p = sub.add_parser("replay", help="rebuild a ZO run's backbone from its base model and seed trajectory",
                       description="Re-apply every update in RUN/final/trajectory.json to the base model, as the "
                                   "run loaded it, save the backbone, and compare it with the run's own.")
    p.add_argument("run_dir", help="a finished mezo or bilevel-zofo run folder")
    p.add_argument("--out", default=None, help="safetensors file (default RUN/final/backbone.replayed.safetensors)")
    p.add_argument("--device", default=None, help="device to replay on (default the run's; replay on the kind of "
                                                   "device the run trained on for bit-identical weights)")
    p.set_defaults(run=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from zofo.run.replay import replay_run

    with usage_errors():
        check_output_file(args.out, "--out", (".safetensors",))
        if args.device is not None:  # else the run's own
            check_device_flag(args.device)
    print(replay_run(args.run_dir, args.out, args.device).summary())
    return 0


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print the resolved config (defaults + file + overrides) as YAML",
                       description="Show what a run would use; the same YAML can be passed back as --config.")
    _add_config_flags(p, TRAIN_FLAGS)
    p.set_defaults(run=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    import yaml

    from zofo.config import to_dict

    with usage_errors():
        cfg = config_from_args(args, TRAIN_FLAGS)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def entry() -> int:
    """The `zofo` command (and `python -m zofo.cli[.main]`): `main`'s exit status. A torchrun rank (WORLD_SIZE > 1)
    ends with `os._exit` once its output is flushed: with torch 2.13's gloo, a rank whose work and process group
    were done still aborted in the interpreter's C++ teardown ("terminate called without an active exception",
    SIGABRT) in about 1 launch of 30 on a loaded CPU, turning a finished run into a failed launch. SIGUSR1 writes
    every thread's stack to stderr (`stacks_on_request`)."""
    stacks_on_request()
    code = main()
    if _launched_world() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(entry())
