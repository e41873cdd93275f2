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

The code takes line 4 first, then lines 3 and 5 for p together, then line 5 for theta: the same values,
since neither estimate moves anything, and p's gradient and step become one CUDA graph.

F is divided by (1 + lam) when `normalize` is set, so the backbone's learning rate means what it means for
MeZO. At each probe point the three terms f(theta, p), g(theta, p), g(theta, z) come from one forward over
[B_f ; B_g ; B_g] with each row routed to its adapter (LoRA), or from two forwards (p on [B_f ; B_g], z on
B_g) for the other PEFT kinds, instead of three. Line 3 takes two backward passes of one batch each, so its
peak memory is that of an FO-PEFT step.

On a CUDA device the K lower steps, the p-step and each probe of F are CUDA-graph replays over fixed-shape
batches (`graphed_step.GraphedStep`, `zo.GraphedProbes`); there F's three terms take three forwards, which
cost no more than the mixed batch once launches are gone. `cuda_graphs=False` runs everything eagerly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from zofo import zo
from zofo.evaluation.static import StaticBatch, static_losses, to_static
from zofo.fo.graphed import GraphedStep, load_optimizer_state, make_adam, plain_state_dict
from zofo.methods.base import Method, make_schedule, split_losses
from zofo.methods.mezo import ZOTrainer, mean_loss
from zofo.models.adapters import activate, supports_mixed_batches
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

    def static_loss(self, copy: str, inputs, part: str) -> torch.Tensor:
        """Mean training loss of the fixed-shape batch `part` ("f" or "g") of `inputs` through adapter `copy`."""
        activate(self.model, self.groups, copy)
        batch = StaticBatch(**{name[len(part) + 1:]: t for name, t in inputs.items() if name.startswith(part + ".")})
        return static_losses(self.model, batch, self.objective).mean()


def prefixed(part: str, batch: StaticBatch) -> dict[str, torch.Tensor]:
    """A fixed-shape batch's tensors named "<part>.<field>" (what `LMTerms.static_loss` reads back)."""
    return {f"{part}.{k}": t for k, t in batch.tensors().items()}


@dataclass
class UpperBatches:
    """B_f and B_g of one outer step; on CUDA also as fixed-shape tensors ("f.<field>", "g.<field>")."""

    examples_f: list
    examples_g: list
    static: dict[str, torch.Tensor] | None = None

    @property
    def rows(self) -> tuple[int, int]:
        """Rows of the fixed-shape B_f and B_g (what one replay runs through the model)."""
        return self.static["f.input_ids"].shape[0], self.static["g.input_ids"].shape[0]


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
        z, p = list(groups.adapter("z").values()), list(groups.adapter("p").values())
        self.graphed = options.cuda_graphs and z[0].is_cuda
        self.opt_z = make_adam(torch.optim.Adam, z, options.lr_lower, graphed=self.graphed)
        self.opt_p = make_adam(torch.optim.Adam, p, options.lr_upper, graphed=self.graphed)
        # the lower step, the p-step and the probes never run at once: their graphs share one memory pool, so
        # the step's peak is the largest graph's, not the sum
        self.pool = torch.cuda.graph_pool_handle() if self.graphed else None
        self.lower_graph = (GraphedStep(z, self.opt_z, self.static_lower_backward, pool=self.pool)
                            if self.graphed else None)
        self.upper_graph = (GraphedStep(p, self.opt_p, self.static_upper_backward, pool=self.pool)
                            if self.graphed else None)
        self.replayed = [0, 0]  # forward and backward rows replayed in this step (zofo.models.work)
        self.setup_theta()

    def setup_theta(self) -> None:
        self.zo = ZOTrainer(self.model, self.groups.backbone, self.options, self.options.lr)
        self.probes = (zo.GraphedProbes(self.model, self.groups.backbone, self.static_penalty, self.options.direction,
                                        pool=self.pool) if self.graphed else None)

    def step(self, step: int) -> dict:
        """One outer iteration; the logged values stay device scalars (the loop reads them when it logs)."""
        self.replayed = [0, 0]
        lower = [self.lower_step() for _ in range(self.K)]                  # line 1
        upper = self.upper_batches()                                         # line 2
        estimate = self.theta_estimate(upper, step)                          # line 4, at line 3's point
        f, g_p = self.p_step(upper)                                          # lines 3 and 5 for p
        logged = self.theta_apply(estimate, step)                            # line 5 for theta
        return {"loss": f, "g_p": g_p, "g_z": lower[-1], **logged,
                "replayed_rows": self.replayed[0], "replayed_backward_rows": self.replayed[1]}

    def lower_step(self) -> torch.Tensor:
        """z <- Adam(z, grad_z g(theta, z; B_g)); returns g (on the device: no sync per step)."""
        examples = self.batches.examples("lower")
        if self.lower_graph is not None:
            batch = to_static(self.batches.encode(examples))
            loss = self.lower_graph(prefixed("g", batch), self.options.lr_lower)
            self.count(self.lower_graph.capture, batch.input_ids.shape[0], backward=True)
            return loss
        loss = self.terms.g("z", examples)
        loss.backward()
        self.opt_z.step()
        self.opt_z.zero_grad(set_to_none=True)
        return loss.detach()

    def static_lower_backward(self, inputs) -> torch.Tensor:
        g = self.terms.static_loss("z", inputs, "g")
        g.backward()
        return g.detach()

    def upper_batches(self) -> UpperBatches:
        upper = UpperBatches(self.batches.examples("upper"), self.batches.examples("lower"))
        if self.graphed:
            f, g = (to_static(self.batches.encode(examples)) for examples in (upper.examples_f, upper.examples_g))
            upper.static = prefixed("f", f) | prefixed("g", g)
        return upper

    def p_step(self, upper: UpperBatches) -> tuple[torch.Tensor, torch.Tensor]:
        """p <- Adam(p, grad_p [f(theta, p; B_f) + lam * g(theta, p; B_g)]); returns (f, g_p), detached.

        Two backward passes of one batch each, so the peak memory is that of an FO-PEFT step."""
        if self.upper_graph is not None:
            values = self.upper_graph(upper.static, self.options.lr_upper)
            self.count(self.upper_graph.capture, sum(upper.rows), backward=True)
            return values[0], values[1]
        f = self.terms.f("p", upper.examples_f)
        f.backward()
        g_p = self.terms.g("p", upper.examples_g)
        (self.lam * g_p).backward()
        self.clear_backbone_grads()
        self.opt_p.step()
        self.opt_p.zero_grad(set_to_none=True)
        return f.detach(), g_p.detach()

    def static_upper_backward(self, inputs) -> torch.Tensor:
        f = self.terms.static_loss("p", inputs, "f")
        f.backward()
        g_p = self.terms.static_loss("p", inputs, "g")
        (self.lam * g_p).backward()
        return torch.stack([f.detach(), g_p.detach()])

    def penalty(self, upper: UpperBatches) -> torch.Tensor:
        """F(theta, p, z) = f(theta, p) + lam * (g(theta, p) - g(theta, z)), times the normalising scale."""
        f, g_p, g_z = self.terms.penalty_terms(upper.examples_f, upper.examples_g)
        return self.scale * (f + self.lam * (g_p - g_z))

    def static_penalty(self, inputs) -> torch.Tensor:
        """F over the fixed-shape B_f and B_g: three forwards (p on B_f, p on B_g, z on B_g)."""
        f, g_p = self.terms.static_loss("p", inputs, "f"), self.terms.static_loss("p", inputs, "g")
        g_z = self.terms.static_loss("z", inputs, "g")
        return self.scale * (f + self.lam * (g_p - g_z))

    def theta_estimate(self, upper: UpperBatches, step: int) -> zo.AnyEstimate:
        """Seeded SPSA estimate of grad_theta F (probes replayed as CUDA graphs on CUDA)."""
        if self.probes is None:
            return self.zo.estimate(lambda: self.penalty(upper), step)
        estimate = self.zo.queue_at(lambda seed, scale: self.probes(upper.static, seed, scale), step)
        rows_f, rows_g = upper.rows
        self.count(self.probes.capture, (rows_f + 2 * rows_g) * len(estimate.losses), backward=False)
        return estimate

    def theta_apply(self, estimate: zo.AnyEstimate, step: int) -> dict:
        """The in-place ZO update of theta (deferred when `update_every` > 1)."""
        return {"penalty": mean_loss(estimate), **self.zo.apply(estimate, step)}

    def count(self, replayed: bool, rows: int, backward: bool) -> None:
        if replayed:
            self.replayed[0] += rows
            self.replayed[1] += rows if backward else 0

    def flush(self) -> None:
        self.zo.flush()

    def seed_trajectory(self) -> zo.Trajectory | None:
        return self.zo.trajectory

    def clear_backbone_grads(self) -> None:
        for param in self.groups.backbone.values():
            param.grad = None

    def state_dict(self) -> dict:
        return {"opt_z": plain_state_dict(self.opt_z), "opt_p": plain_state_dict(self.opt_p),
                "theta": self.theta_state()}

    def theta_state(self) -> dict:
        return self.zo.state_dict()

    def load_state_dict(self, state: dict) -> None:
        load_optimizer_state(self.opt_z, state["opt_z"])
        load_optimizer_state(self.opt_p, state["opt_p"])
        for graphs in (self.lower_graph, self.upper_graph):
            if graphs is not None:
                graphs.reset()
        self.load_theta_state(state["theta"])

    def load_theta_state(self, state: dict) -> None:
        self.zo.load_state_dict(state)


@METHODS.register("bilevel-fo")
class BilevelFO(BilevelZOFO):
    """Algorithm 1: the same penalty method with a backprop gradient for theta (the ZO method's reference)."""

    def setup_theta(self) -> None:
        o = self.options
        self.opt_theta = make_adam(torch.optim.Adam, list(self.groups.backbone.values()), o.lr, o.weight_decay)
        self.lr_theta = make_schedule(o.schedule, o.lr, o.steps, o.warmup_steps)
        self.probes = None

    def theta_estimate(self, upper: UpperBatches, step: int) -> tuple[float, list[torch.Tensor]]:
        """(F, grad_theta F) by backprop; p's .grad is left untouched."""
        params = list(self.groups.backbone.values())
        for param in params:
            param.requires_grad_(True)
        value = self.penalty(upper)
        grads = torch.autograd.grad(value, params)
        for param in params:
            param.requires_grad_(False)
        return value.item(), list(grads)

    def theta_apply(self, estimate: tuple[float, list[torch.Tensor]], step: int) -> dict[str, float]:
        """theta <- Adam(theta, grad_theta F) with the true gradient."""
        value, grads = estimate
        for param, grad in zip(self.groups.backbone.values(), grads, strict=True):
            param.grad = grad
        for group in self.opt_theta.param_groups:
            group["lr"] = self.lr_theta(step)
        self.opt_theta.step()
        self.opt_theta.zero_grad(set_to_none=True)
        return {"penalty": value, "lr": self.lr_theta(step)}

    def flush(self) -> None:
        """Adam applies theta's update at once: nothing is ever pending."""
        return None

    def seed_trajectory(self) -> None:
        """theta moves by backprop gradients here: no seeds describe it."""
        return None

    def theta_state(self) -> dict:
        return self.opt_theta.state_dict()

    def load_theta_state(self, state: dict) -> None:
        self.opt_theta.load_state_dict(state)
