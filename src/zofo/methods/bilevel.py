"""Bilevel ZOFO (Algorithm 2) and its first-order twin (Algorithm 1).

    min_{theta,p} max_z  F(theta, p, z) = f(theta, p) + lam * ( g(theta, p) - g(theta, z) )

    symbols   theta  backbone weights (every weight of the pretrained model)      -- ZO (Alg. 2) / FO (Alg. 1)
              p      upper copy of the PEFT module (adapter "p"), deployed with theta -- FO, Adam
              z      lower copy of the PEFT module (adapter "z")                    -- FO, Adam
              f, g   losses on the upper data D_f and the lower data D_g (split 1:2)
              lam    penalty weight (paper: 1e4);  K  lower steps per upper step (paper: 10)
              eps    ZO perturbation scale (paper: 1e-3)

    one outer iteration t:
    1  repeat K times:  z <- Adam(z, grad_z g(theta, z; B_g))                  fresh B_g each time
    2  draw B_f ~ D_f, B_g ~ D_g
    3  d_p   <- grad_p [ f(theta, p; B_f) + lam * g(theta, p; B_g) ]           (F's z-term has no p)
    4  d_th  <- SPSA estimate of grad_theta F(theta, p, z; B_f, B_g)            (Alg. 1: backprop)
    5  p <- Adam(p, d_p);  theta <- theta - lr_theta * d_th                     (both taken at step 3's point)

F is divided by (1 + lam) when `normalize` is set, so the backbone's learning rate means what it means for
MeZO. At each probe point the three terms f(theta, p), g(theta, p), g(theta, z) come from one forward over
[B_f ; B_g ; B_g] with each row routed to its adapter (LoRA), or from two forwards (p on [B_f ; B_g], z on
B_g) for the other PEFT kinds, instead of three. Line 3 takes two backward passes of one batch each, so its
peak memory is that of an FO-PEFT step.
"""

from __future__ import annotations

import functools

import torch

from zofo.adapters import activate, supports_mixed_batches
from zofo.methods.base import Method, make_schedule, split_losses
from zofo.methods.mezo import ZOTrainer
from zofo.registry import METHODS


class LMTerms:
    """f and g of a language model whose PEFT copies are named adapters."""

    def __init__(self, model, groups, encode, objective: str):
        self.model, self.groups, self.encode, self.objective = model, groups, encode, objective
        self.mixed = supports_mixed_batches(model)

    def loss(self, copy: str, examples) -> torch.Tensor:
        """Mean training loss of `examples` through adapter `copy`."""
        activate(self.model, self.groups, copy)
        return split_losses(self.model, self.encode(examples), [len(examples)], self.objective)[0]

    def f(self, copy: str, examples_f) -> torch.Tensor:
        """f(theta, copy; B_f): the upper objective is the training loss on the upper data."""
        return self.loss(copy, examples_f)

    def g(self, copy: str, examples_g) -> torch.Tensor:
        """g(theta, copy; B_g): the lower objective is the training loss on the lower data."""
        return self.loss(copy, examples_g)

    def penalty_terms(self, examples_f, examples_g) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f(theta, p; B_f), g(theta, p; B_g), g(theta, z; B_g)): one forward over [B_f; B_g; B_g] with
        each row routed to its adapter where peft allows mixed batches (LoRA), else two forwards."""
        if not self.mixed:
            activate(self.model, self.groups, "p")
            sizes = [len(examples_f), len(examples_g)]
            f, g_p = split_losses(self.model, self.encode(list(examples_f) + list(examples_g)), sizes, self.objective)
            return f, g_p, self.g("z", examples_g)
        sizes = [len(examples_f), len(examples_g), len(examples_g)]
        batch = self.encode(list(examples_f) + list(examples_g) + list(examples_g))
        owner = ["p"] * (sizes[0] + sizes[1]) + ["z"] * sizes[2]
        rows = [owner[i] for i in batch.row_example.tolist()]
        f, g_p, g_z = split_losses(functools.partial(self.model, adapter_names=rows), batch, sizes, self.objective)
        return f, g_p, g_z


@METHODS.register("bilevel-zofo")
class BilevelZOFO(Method):
    """Algorithm 2: FO on the PEFT copies, ZO on the backbone through the value-function penalty F."""

    adapter_names = ("z", "p")
    deploy_adapter = "p"
    stream_names = ("upper", "lower")
    trains_backbone = True

    def __init__(self, model, groups, batches, options):
        super().__init__(model, groups, batches, options)
        self.terms = LMTerms(model, groups, batches.encode, options.objective)
        self.lam, self.K = options.lam, options.lower_steps
        self.deploy_adapter = options.deploy
        self.scale = 1.0 / (1.0 + self.lam) if options.normalize else 1.0
        self.opt_z = torch.optim.Adam(groups.adapter("z").values(), lr=options.lr_lower)
        self.opt_p = torch.optim.Adam(groups.adapter("p").values(), lr=options.lr_upper)
        self.setup_theta()

    def setup_theta(self) -> None:
        self.zo = ZOTrainer(self.model, self.groups.backbone, self.options, self.options.lr)

    def step(self, step: int) -> dict[str, float]:
        lower = [self.lower_step() for _ in range(self.K)]                              # line 1
        examples_f, examples_g = self.batches.examples("upper"), self.batches.examples("lower")  # line 2
        f, g_p = self.p_gradient(examples_f, examples_g)                                   # line 3
        logged = self.theta_step(examples_f, examples_g, step)                             # lines 4-5
        self.opt_p.step()                                                                  # line 5
        self.opt_p.zero_grad(set_to_none=True)
        return {"loss": f, "g_p": g_p, "g_z": lower[-1], **logged}

    def lower_step(self) -> float:
        """z <- Adam(z, grad_z g(theta, z; B_g))."""
        loss = self.terms.g("z", self.batches.examples("lower"))
        loss.backward()
        self.opt_z.step()
        self.opt_z.zero_grad(set_to_none=True)
        return loss.item()

    def p_gradient(self, examples_f, examples_g) -> tuple[float, float]:
        """Leave grad_p [f + lam * g(theta, p)] in p's .grad; returns (f, g_p).

        Two backward passes of one batch each, so the peak memory is that of an FO-PEFT step."""
        f = self.terms.f("p", examples_f)
        f.backward()
        g_p = self.terms.g("p", examples_g)
        (self.lam * g_p).backward()
        self.clear_backbone_grads()
        return f.item(), g_p.item()

    def penalty(self, examples_f, examples_g) -> torch.Tensor:
        """F(theta, p, z) = f(theta, p) + lam * (g(theta, p) - g(theta, z)), times the normalising scale."""
        f, g_p, g_z = self.terms.penalty_terms(examples_f, examples_g)
        return self.scale * (f + self.lam * (g_p - g_z))

    def theta_step(self, examples_f, examples_g, step: int) -> dict[str, float]:
        """ZO: seeded SPSA estimate of grad_theta F, then the in-place update of theta."""
        estimate = self.zo.estimate(lambda: self.penalty(examples_f, examples_g), step)
        return {"penalty": sum(estimate.losses) / max(1, len(estimate.losses)), **self.zo.apply(estimate, step)}

    def flush(self) -> None:
        self.zo.flush()

    def clear_backbone_grads(self) -> None:
        for param in self.groups.backbone.values():
            param.grad = None

    def state_dict(self) -> dict:
        return {"opt_z": self.opt_z.state_dict(), "opt_p": self.opt_p.state_dict(), "theta": self.theta_state()}

    def theta_state(self) -> dict:
        return self.zo.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt_z.load_state_dict(state["opt_z"])
        self.opt_p.load_state_dict(state["opt_p"])
        self.load_theta_state(state["theta"])

    def load_theta_state(self, state: dict) -> None:
        self.zo.load_state_dict(state)


@METHODS.register("bilevel-fo")
class BilevelFO(BilevelZOFO):
    """Algorithm 1: the same penalty method with a backprop gradient for theta (the ZO method's reference)."""

    def setup_theta(self) -> None:
        o = self.options
        self.opt_theta = torch.optim.Adam(self.groups.backbone.values(), lr=o.lr, weight_decay=o.weight_decay)
        self.lr_theta = make_schedule(o.schedule, o.lr, o.steps, o.warmup_steps)

    def theta_step(self, examples_f, examples_g, step: int) -> dict[str, float]:
        """theta <- Adam(theta, grad_theta F) with the true gradient."""
        params = list(self.groups.backbone.values())
        for param in params:
            param.requires_grad_(True)
        value = self.penalty(examples_f, examples_g)
        grads = torch.autograd.grad(value, params)  # leaves p's .grad (from line 3) untouched
        for param, grad in zip(params, grads, strict=True):
            param.requires_grad_(False)
            param.grad = grad
        for group in self.opt_theta.param_groups:
            group["lr"] = self.lr_theta(step)
        self.opt_theta.step()
        self.opt_theta.zero_grad(set_to_none=True)
        return {"penalty": value.item(), "lr": self.lr_theta(step)}

    def flush(self) -> None:
        """Adam applies theta's update at once: nothing is ever pending."""
        return None

    def theta_state(self) -> dict:
        return self.opt_theta.state_dict()

    def load_theta_state(self, state: dict) -> None:
        self.opt_theta.load_state_dict(state)
