"""First-order baselines: full fine-tuning and PEFT (LoRA / prefix / prompt), both with Adam(W)."""

from __future__ import annotations

import torch

from zofo.methods.base import Method, batch_loss, make_schedule
from zofo.registry import METHODS


class FirstOrder(Method):
    """theta_or_peft <- AdamW step on grad L(batch): the ordinary backprop baseline."""

    def setup(self, params: dict[str, torch.nn.Parameter], lr: float) -> None:
        for param in params.values():
            param.requires_grad_(True)
        self.params = params
        self.optimizer = torch.optim.AdamW(params.values(), lr=lr, weight_decay=self.options.weight_decay)
        self.lr = make_schedule(self.options.schedule, lr, self.options.steps, self.options.warmup_steps)

    def step(self, step: int) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(step)
        loss = batch_loss(self.model, self.batches.next("train"), self.objective)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item(), "lr": self.lr(step)}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


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
