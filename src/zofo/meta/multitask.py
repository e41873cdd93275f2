"""Multi-task baselines on the same loop and the same meta-train data: one stream over the union of every meta-train
task's examples (D_f and D_g of each, each example in its own task's prompt format), fed to an ordinary single-task
method, run by `zofo.run.recipe.Run` as `zofo train` runs it:

    fo-peft   one shared LoRA (Adam) on all tasks, then merged into the backbone (final/backbone.safetensors)
    fo-full   first-order full fine-tuning on all tasks (MetaICL's multi-task training)
    mezo      ZO-SGD on the whole backbone on all tasks

Dev: the tasks' held-out dev examples, pooled (one accuracy over all of them); result.json's "test" is the same
pooled dev set (the real test is `zofo meta-test` on held-out tasks). A shared prefix or prompt cannot be merged into
the backbone, so fo-peft takes LoRA only.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from zofo.errors import ZofoError
from zofo.meta.split import Split, TaskData
from zofo.methods import Method
from zofo.run.checkpoint import save_weights
from zofo.run.recipe import Run
from zofo.tasks.sampling import Splits


class PooledRun(Run):
    """`Run` whose data is the pooled meta-train examples instead of one task's sample."""

    def __init__(self, cfg, data: list[TaskData], task):
        self.pooled, self.first_task = data, task
        super().__init__(cfg)

    def folder_lock(self) -> AbstractContextManager:
        """None of its own: the meta-train that runs it holds the folder's lock and checked the folder."""
        return nullcontext()

    def load_data(self):
        train = [example for d in self.pooled for example in d.upper + d.lower]
        dev = [example for d in self.pooled for example in d.dev]
        return Splits(train, dev, dev, "pooled meta-train"), self.first_task

    def write_final(self, method: Method, backbone: dict[str, torch.Tensor], final: Path) -> None:
        """As `Run.write_final`, and a shared LoRA merged into the backbone: what meta-test adapts from."""
        super().write_final(method, backbone, final)
        if method.deploy_adapter is not None:
            save_weights(merged_backbone(method), final / "backbone.safetensors")


def merged_backbone(method: Method) -> dict[str, torch.Tensor]:
    """theta + B A * scale of the deployed LoRA, by the backbone's own parameter names (the model is untouched)."""
    merged = copy.deepcopy(method.model)
    merged.set_adapter(method.deploy_adapter)
    plain = merged.merge_and_unload()
    weights = dict(plain.named_parameters())
    missing = sorted(set(method.groups.backbone) - set(weights))
    if missing:
        raise ZofoError(f"merged model lacks backbone parameter {missing[0]}", "merge a LoRA adapter only")
    return {name: weights[name].detach() for name in method.groups.backbone}


def run_baseline(cfg, split: Split, data: list[TaskData], resume_run: bool) -> dict:
    """Run baseline `cfg.method` on the pooled examples of `data` (a `MetaTrainConfig`); returns result.json."""
    if not any(d.dev for d in data):
        raise ZofoError("no meta-train task has dev examples left", "raise --n-dev or use larger tasks")
    run_cfg = cfg.run_config()
    t = run_cfg.train
    t.eval_every, t.save_every, t.log_every, t.progress = cfg.eval_every, cfg.save_every, cfg.log_every, cfg.progress
    # Eager: the pooled batches take many shapes (rows = examples x their task's candidates, and widths), and CUDA
    # graphs capture one graph with its own memory pool per shape (67 tasks ran out of an H100's memory).
    t.cuda_graphs = False
    t.max_rows = cfg.max_rows
    t.resume = str(Path(cfg.out) / "checkpoint") if resume_run else None
    first = split.task(split.meta_train[0])
    return PooledRun(run_cfg, data, first).execute()
