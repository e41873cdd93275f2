"""The public surface: load a model, train with any method, evaluate. The CLI is a thin layer over it."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from zofo.config import RunConfig, check_ranges, resumed_config
from zofo.errors import ZofoError
from zofo.models import load_model

#: methods that train a PEFT module, and the default kind they get
PEFT_METHODS = {"fo-peft", "zo-peft", "bilevel-zofo", "bilevel-fo"}
FULL_METHODS = {"fo-full", "mezo"}
NO_TRAIN = {"zero-shot", "icl"}


def check_options(cfg: RunConfig) -> None:
    """Refuse inconsistent options before any model or data is loaded. Each error names its config key, so that
    `load_config`, which runs this, can point at the key's line in a config file."""
    import zofo.methods  # noqa: F401  (registers the methods)
    from zofo.registry import METHODS

    check_ranges(cfg)
    method, kind = cfg.train.method, cfg.peft.kind
    try:
        METHODS.get(method)
    except ZofoError as err:  # the registry's message, with the key it is about
        raise ZofoError(err.what, err.fix, "train.method") from err
    if method in FULL_METHODS | NO_TRAIN and kind not in (None, "none"):
        raise ZofoError(f"--peft {kind} does not apply to method {method} (it trains no PEFT module)",
                        "drop --peft, or choose fo-peft, zo-peft, bilevel-zofo or bilevel-fo", "peft.kind")
    if method in PEFT_METHODS and kind == "none":
        raise ZofoError(f"method {method} needs a PEFT module", "use --peft lora, prefix or prompt", "peft.kind")
    if method.startswith("bilevel"):
        _check_bilevel(cfg)
    if method == "icl" and cfg.data.shots < 1:
        raise ZofoError("method icl needs --shots K with K >= 1", "e.g. --shots 16", "data.shots")
    _check_choices(cfg)
    _check_objective(cfg)
    _check_steps(cfg)


def _check_bilevel(cfg: RunConfig) -> None:
    if cfg.bilevel.deploy not in ("p", "z"):
        raise ZofoError(f"bilevel.deploy must be p or z, got {cfg.bilevel.deploy!r}", "p is the formulation's",
                        "bilevel.deploy")


def _check_choices(cfg: RunConfig) -> None:
    """Values that name one of a fixed set: checked here, not where the first of them is used, minutes later."""
    from zofo.adapters import PEFT_KINDS
    from zofo.methods.mezo import UPDATE_RULES
    from zofo.models import DTYPES
    from zofo.zo.directions import DIRECTIONS

    for key, value, choices in [("model.dtype", cfg.model.dtype, DTYPES),
                                ("peft.kind", cfg.peft.kind, (None, "none", *PEFT_KINDS)),
                                ("optim.direction", cfg.optim.direction, DIRECTIONS),
                                ("optim.theta_update", cfg.optim.theta_update, UPDATE_RULES)]:
        if value not in choices:
            named = ", ".join(c for c in choices if c not in (None, "none"))
            raise ZofoError(f"unknown {key} {value!r}", f"use one of: {named}", key)


def _check_objective(cfg: RunConfig) -> None:
    """The candidate cross-entropy needs candidates: generative tasks (SQuAD, DROP) train with the LM loss."""
    from zofo.tasks import TASKS

    objective, task = cfg.data.objective, cfg.data.task
    if objective not in ("ce", "lm"):
        raise ZofoError(f"unknown data.objective {objective!r}", "use ce (candidate cross-entropy) or lm",
                        "data.objective")
    if objective == "ce" and task in TASKS and TASKS.get(task).generative and cfg.train.method not in NO_TRAIN:
        raise ZofoError(f"task {task} is generative (its examples have no candidates), so the ce objective "
                        "cannot train on it", "use --set data.objective=lm", "data.objective")


def _check_steps(cfg: RunConfig) -> None:
    """A method that trains needs a step to train; evaluating without training is what zero-shot and icl do."""
    if cfg.train.method not in NO_TRAIN and cfg.train.steps < 1:
        raise ZofoError(f"train.steps is {cfg.train.steps}: method {cfg.train.method} would train for no step",
                        "give --steps N >= 1; to only evaluate, use --method zero-shot (or icl), or `zofo eval`",
                        "train.steps")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def peft_kind(cfg: RunConfig) -> str | None:
    """The PEFT kind this run attaches (LoRA by default for methods that need one)."""
    if cfg.train.method not in PEFT_METHODS:
        return None
    return cfg.peft.kind or "lora"


def run_dir_for(cfg: RunConfig) -> Path:
    if cfg.train.output_dir:
        return Path(cfg.train.output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.train.method}-{cfg.data.task.replace(':', '-')}-{stamp}"


def prepared(cfg: RunConfig, overwrite: bool = False) -> RunConfig:
    """The config a run trains with (a resumed run's own, `resumed_config`), once its options and its run folder
    are checked (`zofo.run_folder`): everything that can be refused before anything loads."""
    from zofo.run_folder import check_run_folder

    if cfg.train.resume and overwrite:
        raise ZofoError("--overwrite and --resume contradict each other (a resumed run continues its folder)",
                        "give one of them", "train.resume")
    cfg = resumed_config(cfg) if cfg.train.resume else cfg
    check_options(cfg)
    if not cfg.train.resume:
        check_run_folder(run_dir_for(cfg), overwrite)
    return cfg


def train(cfg: RunConfig, overwrite: bool = False) -> dict:
    """Fine-tune (or only evaluate, for zero-shot / ICL) as `cfg` says; returns the run's results. A SIGINT or
    SIGTERM stops it after the current step with a checkpoint (`zofo.interrupt.TrainingInterrupted` says where;
    `train.resume` continues from it). A run folder that holds a run is refused, unless ``overwrite``: then that
    run is deleted first."""
    from zofo.run_folder import clear_run_folder
    from zofo.training import Run

    cfg = prepared(cfg, overwrite)
    if overwrite:
        clear_run_folder(run_dir_for(cfg))
    return Run(cfg).execute()


def train_together(cfgs: list[RunConfig]) -> list[dict | Exception]:
    """Several runs at once in this process, each on its own CUDA stream (`zofo.concurrent`): on one GPU, runs
    of a small model overlap instead of taking turns. Per run, its result or the exception it raised."""
    from zofo.concurrent import train_together as together

    return together([prepared(cfg) for cfg in cfgs])


__all__ = ["load_model", "train", "train_together", "check_options", "prepared", "RunConfig"]
