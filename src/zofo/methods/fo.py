"""First-order baselines: full fine-tuning and PEFT (LoRA / prefix / prompt), both with Adam(W).

On a CUDA device each step (forward, backward, AdamW) is one CUDA-graph replay over a fixed-shape batch
(`graphed_step.GraphedStep`, `static_batches`); `cuda_graphs=False` steps eagerly.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from zofo.evaluation.static import to_static
from zofo.fo.graphed import GraphedStep, load_optimizer_state, make_adam, plain_state_dict, set_lr
from zofo.methods.base import Method, batch_backward, batch_loss
from zofo.registry import METHODS


class FirstOrder(Method):
    """theta_or_peft <- AdamW step on grad L(batch): the ordinary backprop baseline. It trains the backbone
    (``trains_backbone``) or the PEFT module, at the learning rate named by ``lr_name``."""

    #: the `optim` learning rate of the trained parameters
    lr_name: ClassVar[str] = "lr"
    takes_pieces = True

    def __init__(self, model, groups, batches, settings, options=None):
        super().__init__(model, groups, batches, settings, options)
        params = self.trained_group()
        for param in params.values():
            param.requires_grad_(True)
        self.params = params
        trained = list(params.values())
        self.ranks = settings.ranks  # data parallel: gradients averaged over the ranks, steps taken eagerly
        graphed = settings.graphed and trained[0].is_cuda and not self.ranks.parallel
        lr = getattr(settings.optim, self.lr_name)
        self.optimizer = make_adam(torch.optim.AdamW, trained, lr, settings.optim.weight_decay, graphed)
        self.lr = settings.schedule(lr)
        self.graphed = GraphedStep(trained, self.optimizer, self.static_backward) if graphed else None

    def step(self, step: int) -> dict:
        batch = self.batches.next("train")
        if self.graphed is not None:  # one replay; its loss stays a device scalar (the loop reads it when it logs)
            return {"loss": self.graphed(to_static(batch).tensors(), self.lr(step)), "lr": self.lr(step)}
        set_lr(self.optimizer, self.lr(step))
        loss = batch_backward(self.model, batch, self.objective, self.settings.max_rows)
        self.ranks.average_grads_(list(self.params.values()))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item(), "lr": self.lr(step)}

    def static_backward(self, inputs) -> torch.Tensor:
        """grad L(batch) into the parameters' .grad; returns L."""
        loss = batch_loss(self.model, inputs, self.objective)
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


@METHODS.register("fo-peft")
class FOPeft(FirstOrder):
    """Backprop on the PEFT module only; the backbone stays frozen."""

    adapter_names = ("default",)
    deploy_adapter = "default"
    lr_name = "lr_upper"
    shards_backbone = True
