"""First-order baselines: full fine-tuning and PEFT (LoRA / prefix / prompt), both with Adam(W).

On a CUDA device each step (forward, backward, AdamW) is one CUDA-graph replay over a fixed-shape batch
(`graphed_step.GraphedStep`, `static_batches`); `cuda_graphs=False` steps eagerly.
"""

from __future__ import annotations

import torch

from zofo.evaluation.static import StaticBatch, static_losses, to_static
from zofo.fo.graphed import GraphedStep, load_optimizer_state, make_adam, plain_state_dict, set_lr
from zofo.methods.base import Method, batch_loss, make_schedule
from zofo.registry import METHODS


class FirstOrder(Method):
    """theta_or_peft <- AdamW step on grad L(batch): the ordinary backprop baseline."""

    def setup(self, params: dict[str, torch.nn.Parameter], lr: float) -> None:
        for param in params.values():
            param.requires_grad_(True)
        self.params = params
        trained = list(params.values())
        graphed = self.options.cuda_graphs and trained[0].is_cuda
        self.optimizer = make_adam(torch.optim.AdamW, trained, lr, self.options.weight_decay, graphed)
        self.lr = make_schedule(self.options.schedule, lr, self.options.steps, self.options.warmup_steps)
        self.graphed = GraphedStep(trained, self.optimizer, self.static_backward) if graphed else None

    def step(self, step: int) -> dict:
        batch = self.batches.next("train")
        if self.graphed is not None:
            return self.graphed_step(to_static(batch), step)
        set_lr(self.optimizer, self.lr(step))
        loss = batch_loss(self.model, batch, self.objective)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item(), "lr": self.lr(step)}

    def graphed_step(self, batch: StaticBatch, step: int) -> dict:
        """One replayed step; its loss stays a device scalar (the loop reads it when it logs)."""
        loss = self.graphed(batch.tensors(), self.lr(step))
        rows = batch.input_ids.shape[0] if self.graphed.capture else 0
        return {"loss": loss, "lr": self.lr(step), "replayed_rows": rows, "replayed_backward_rows": rows}

    def static_backward(self, inputs) -> torch.Tensor:
        """grad L(batch) into the parameters' .grad; returns L."""
        loss = static_losses(self.model, StaticBatch(**inputs), self.objective).mean()
        loss.backward()
        return loss.detach()

    def state_dict(self) -> dict:
        return {"optimizer": plain_state_dict(self.optimizer)}

    def load_state_dict(self, state: dict) -> None:
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.graphed is not None:
            self.graphed.reset()


@METHODS.register("fo-full")
class FOFull(FirstOrder):
    """Full fine-tuning with backprop (the upper reference)."""

    trains_backbone = True

    def __init__(self, model, groups, batches, options):
        super().__init__(model, groups, batches, options)
        self.setup(groups.backbone, options.lr)


@METHODS.register("fo-peft")
class FOPeft(FirstOrder):
    """Backprop on the PEFT module only; the backbone stays frozen."""

    adapter_names = ("default",)
    deploy_adapter = "default"

    def __init__(self, model, groups, batches, options):
        super().__init__(model, groups, batches, options)
        self.setup(groups.adapter("default"), options.lr_upper)
