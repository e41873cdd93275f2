"""The public surface: load a model, train with any method, evaluate. The CLI is a thin layer over it."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from zofo.config import CHECKPOINT_WEIGHTS, RunConfig, resumed_config
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
    _check_positive(cfg)


def _check_bilevel(cfg: RunConfig) -> None:
    b = cfg.bilevel
    if b.lower_steps < 1:
        raise ZofoError(f"bilevel.lower_steps (K) must be >= 1, got {b.lower_steps}", "set K >= 1",
                        "bilevel.lower_steps")
    if b.lam < 0:
        raise ZofoError(f"bilevel.lam must be >= 0, got {b.lam}", "use lambda >= 0", "bilevel.lam")
    if not 0 < b.upper_fraction < 1:
        raise ZofoError("bilevel.upper_fraction must lie in (0, 1)", "the paper's split is 1/3 (1:2)",
                        "bilevel.upper_fraction")
    if b.deploy not in ("p", "z"):
        raise ZofoError(f"bilevel.deploy must be p or z, got {b.deploy!r}", "p is the formulation's",
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
                                ("optim.theta_update", cfg.optim.theta_update, UPDATE_RULES),
                                ("train.checkpoint_weights", cfg.train.checkpoint_weights, CHECKPOINT_WEIGHTS)]:
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


def _check_positive(cfg: RunConfig) -> None:
    for key, value in [("train.steps", cfg.train.steps), ("train.batch_size", cfg.train.batch_size),
                       ("optim.q", cfg.optim.q), ("data.max_length", cfg.data.max_length)]:
        if value < (0 if key == "train.steps" else 1):
            raise ZofoError(f"{key} must be positive, got {value}", "fix the value", key)
    if cfg.optim.eps <= 0:
        raise ZofoError(f"optim.eps must be > 0, got {cfg.optim.eps}", "the paper uses 1e-3", "optim.eps")
    for key in ("max_seconds", "max_train_seconds"):
        budget = getattr(cfg.train, key)
        if budget is not None and budget <= 0:
            raise ZofoError(f"train.{key} must be > 0 seconds, got {budget}", "leave it unset for no time budget",
                            f"train.{key}")


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


def train(cfg: RunConfig) -> dict:
    """Fine-tune (or only evaluate, for zero-shot / ICL) as `cfg` says; returns the run's results. A SIGINT or
    SIGTERM stops it after the current step with a checkpoint (`zofo.interrupt.TrainingInterrupted` says where;
    `train.resume` continues from it)."""
    from zofo.training import Run

    cfg = resumed_config(cfg) if cfg.train.resume else cfg
    check_options(cfg)
    return Run(cfg).execute()


def train_together(cfgs: list[RunConfig]) -> list[dict | Exception]:
    """Several runs at once in this process, each on its own CUDA stream (`zofo.concurrent`): on one GPU, runs
    of a small model overlap instead of taking turns. Per run, its result or the exception it raised."""
    from zofo.concurrent import train_together as together

    cfgs = [resumed_config(cfg) if cfg.train.resume else cfg for cfg in cfgs]
    for cfg in cfgs:
        check_options(cfg)
    return together(cfgs)


__all__ = ["load_model", "train", "train_together", "check_options", "RunConfig"]
