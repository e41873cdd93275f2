"""The public surface: load a model, train with any method, evaluate. The CLI is a thin layer over it."""

from __future__ import annotations

from zofo.evaluation import evaluate
from zofo.meta import MetaTestProtocol, meta_test
from zofo.meta.metarun import meta_train as _meta_train
from zofo.meta.options import MetaTrainConfig
from zofo.models.load import load_model
from zofo.run.concurrent import train_together as together
from zofo.run.options import RunConfig, check_options, load_config, prepared
from zofo.run.recipe import Run


def train(cfg: RunConfig, overwrite: bool = False) -> dict:
    """Fine-tune (or only evaluate, for zero-shot / ICL) as `cfg` says; returns the run's results. A SIGINT or
    SIGTERM stops it after the current step with a checkpoint (`zofo.run.interrupt.TrainingInterrupted` says where;
    `train.resume` continues from it). A run folder that holds a run is refused, unless ``overwrite``: then the new
    run deletes the old one's files once it holds the folder and has loaded its data and model."""
    return Run(prepared(cfg, overwrite), replace=overwrite).execute()


def train_together(cfgs: list[RunConfig]) -> list[dict | Exception]:
    """Several runs at once in this process, each on its own CUDA stream (`zofo.run.concurrent`): on one GPU, runs
    of a small model overlap instead of taking turns. Per run, its result or the exception it raised."""
    return together([prepared(cfg) for cfg in cfgs])


def meta_train(split: str, model: str = "smollm2-135m", out: str | None = None, **options) -> dict:
    """Meta-train over the split file's meta-train tasks (`zofo.meta.options.MetaTrainConfig` lists the options:
    method, T, K, lam, per-task sizes, PEFT kind, learning rates, eps, seed, steps, ...); returns result.json."""
    return _meta_train(MetaTrainConfig(split=split, model=model, out=out, **options))


__all__ = ["MetaTestProtocol", "MetaTrainConfig", "RunConfig", "check_options", "evaluate", "load_config",
           "load_model", "meta_test", "meta_train", "train", "train_together"]
