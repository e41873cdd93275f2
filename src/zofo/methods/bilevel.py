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

Each term is written once (`lower_backward`, `upper_backward`, `penalty`) and run through `fo.GraphedStep` and
`zo.GraphedProbes`, which on a CUDA device replay it as CUDA graphs over fixed-shape batches and elsewhere (or
with `cuda_graphs=False`) call it eagerly. Over fixed-shape batches F's three terms take three forwards, which
cost no more than the mixed batch once launches are gone. The backbone's updater is a class attribute:
`zo.ZOOptimizer` here, backprop (`fo.BackpropOptimizer`) for Algorithm 1.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from zofo.errors import ZofoError
from zofo.evaluation.static import to_static
from zofo.fo.backprop import BackpropOptimizer
from zofo.fo.graphed import GraphedStep, load_optimizer_state, make_adam, plain_state_dict
from zofo.methods.base import Method, batch_loss, split_losses
from zofo.models.adapters import activate, supports_mixed_batches
from zofo.registry import METHODS
from zofo.zo.graphs import GraphedProbes, batch_rows
from zofo.zo.optimizer import ZOOptimizer, mean_loss
from zofo.zo.trajectory import Trajectory

#: B_f and B_g of a step: {"f": examples, "g": examples} eagerly, or their fixed-shape tensors named
#: "f.<field>", "g.<field>" (what a CUDA graph replays)
Inputs = Mapping[str, Any]


@dataclass(frozen=True)
class BilevelOptions:
    """The YAML section `bilevel:` of both bilevel methods."""

    lam: float = 1e4                    # penalty weight lambda
    lower_steps: int = 10               # K: FO steps on z per upper step
    upper_fraction: float = 1 / 3       # D_f share of the training set (1:2 split)
    normalize: bool = True              # divide F by (1 + lambda) so MeZO's learning rates carry over
    deploy: str = "p"                   # copy deployed with theta: p (the formulation's) or z

    def check(self) -> None:
        if self.lower_steps < 1:
            raise ZofoError(f"bilevel.lower_steps (K) must be >= 1, got {self.lower_steps}", "set K >= 1",
                            "bilevel.lower_steps")
        if self.lam < 0:
            raise ZofoError(f"bilevel.lam must be >= 0, got {self.lam}", "use lambda >= 0", "bilevel.lam")
        if not 0 < self.upper_fraction < 1:
            raise ZofoError("bilevel.upper_fraction must lie in (0, 1)", "the paper's split is 1/3 (1:2)",
                            "bilevel.upper_fraction")
        if self.deploy not in ("p", "z"):
            raise ZofoError(f"bilevel.deploy must be p or z, got {self.deploy!r}", "p is the formulation's",
                            "bilevel.deploy")


class LMTerms:
    """f and g of a language model whose PEFT copies are named adapters, over `Inputs` of either form."""

    def __init__(self, model, groups, encode, objective: str):
        self.model, self.groups, self.encode, self.objective = model, groups, encode, objective
        self.mixed = supports_mixed_batches(model)

    def batch(self, inputs: Inputs, part: str):
        """B_part ("f" or "g"): its examples encoded, or its fixed-shape tensors."""
        if part in inputs:
            return self.encode(inputs[part])
        return {name[len(part) + 1:]: t for name, t in inputs.items() if name.startswith(part + ".")}

    def loss(self, copy: str, inputs: Inputs, part: str) -> torch.Tensor:
        """f(theta, copy; B_f) (part "f") or g(theta, copy; B_g) (part "g"): the mean training loss of B_part
        through adapter `copy`."""
        activate(self.model, self.groups, copy)
        return batch_loss(self.model, self.batch(inputs, part), self.objective)

    def at_once(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f(theta, p; B_f), g(theta, p; B_g), g(theta, z; B_g)) in as few forwards as the form allows: examples
        go through one forward over [B_f; B_g; B_g] with each row routed to its adapter where peft allows mixed
        batches (LoRA), else two; fixed-shape tensors through three (each a forward of its own fixed shape)."""
        if "f" not in inputs:
            return self.loss("p", inputs, "f"), self.loss("p", inputs, "g"), self.loss("z", inputs, "g")
        examples_f, examples_g = list(inputs["f"]), list(inputs["g"])
        if not self.mixed:
            activate(self.model, self.groups, "p")
            sizes = [len(examples_f), len(examples_g)]
            f, g_p = split_losses(self.model, self.encode(examples_f + examples_g), sizes, self.objective)
            return f, g_p, self.loss("z", inputs, "g")
        sizes = [len(examples_f), len(examples_g), len(examples_g)]
        batch = self.encode(examples_f + examples_g + examples_g)
        owner = ["p"] * (sizes[0] + sizes[1]) + ["z"] * sizes[2]
        rows = [owner[i] for i in batch.row_example.tolist()]
        f, g_p, g_z = split_losses(functools.partial(self.model, adapter_names=rows), batch, sizes, self.objective)
        return f, g_p, g_z


def penalty_rows(inputs: Inputs) -> int:
    """Rows one evaluation of F runs through the model over fixed-shape tensors: B_f once, B_g twice."""
    return batch_rows({k: t for k, t in inputs.items() if k.startswith("f.")}) + 2 * batch_rows(
        {k: t for k, t in inputs.items() if k.startswith("g.")})


@METHODS.register("bilevel-zofo")
class BilevelZOFO(Method):
    """Algorithm 2: FO on the PEFT copies, ZO on the backbone through the value-function penalty F."""

    adapter_names = ("z", "p")
    deploy_adapter = "p"
    stream_names = ("upper", "lower")
    trains_backbone = True
    shards_backbone = True
    section = "bilevel"
    Options = BilevelOptions
    #: the backbone's updater (lines 4-5 for theta): seeded SPSA and a ZO update rule
    Backbone: ClassVar[type] = ZOOptimizer

    def __init__(self, model, groups, batches, settings, options=None):
        super().__init__(model, groups, batches, settings, options)
        o, s = self.options, settings
        self.terms = LMTerms(model, groups, batches.encode, s.objective)
        self.lam, self.K, self.deploy_adapter = o.lam, o.lower_steps, o.deploy
        self.scale = 1.0 / (1.0 + self.lam) if o.normalize else 1.0
        z, p = list(groups.adapter("z").values()), list(groups.adapter("p").values())
        self.graphed = s.graphed and z[0].is_cuda
        self.opt_z = make_adam(torch.optim.Adam, z, s.optim.lr_lower, graphed=self.graphed)
        self.opt_p = make_adam(torch.optim.Adam, p, s.optim.lr_upper, graphed=self.graphed)
        # the lower step, the p-step and the probes never run at once: their graphs share one memory pool, so
        # the step's peak is the largest graph's, not the sum
        pool = torch.cuda.graph_pool_handle() if self.graphed else None
        # data parallel: z's and p's gradients are averaged over the ranks (eagerly), theta's probe losses too
        self.lower = GraphedStep(z, self.opt_z, self.lower_backward, capture=self.graphed, pool=pool, ranks=s.ranks)
        self.upper = GraphedStep(p, self.opt_p, self.upper_backward, capture=self.graphed, pool=pool, ranks=s.ranks)
        self.theta = self.Backbone(model, groups.backbone, s.zo, s.schedule(s.optim.lr), s.seed,
                                   s.optim.weight_decay, ranks=s.ranks)
        self.probes = (GraphedProbes(model, groups.backbone, self.penalty, s.zo.direction, pool=pool,
                                     rows=penalty_rows) if self.graphed else None)

    def step(self, step: int) -> dict:
        """One outer iteration; the logged values stay device scalars (the loop reads them when it logs)."""
        lr_z, lr_p = self.settings.optim.lr_lower, self.settings.optim.lr_upper
        lower = [self.lower(self.inputs(g=self.batches.examples("lower")), lr_z)
                 for _ in range(self.K)]                                               # line 1
        upper = self.inputs(f=self.batches.examples("upper"), g=self.batches.examples("lower"))  # line 2
        estimate = self.theta.estimate_of(self.penalty, upper, step, self.probes)    # line 4, at line 3's point
        f, g_p = self.upper(upper, lr_p)                                              # lines 3 and 5 for p
        logged = self.theta.apply(estimate, step)                                     # line 5 for theta
        return {"loss": f, "g_p": g_p, "g_z": lower[-1], "penalty": mean_loss(estimate), **logged}

    def inputs(self, **parts: list) -> Inputs:
        """Each part's examples as they are, or (CUDA graphs) as fixed-shape tensors "<part>.<field>"."""
        if not self.graphed:
            return parts
        return {f"{part}.{k}": t for part, examples in parts.items()
                for k, t in to_static(self.batches.encode(examples)).tensors().items()}

    def lower_backward(self, inputs: Inputs) -> torch.Tensor:
        """grad_z g(theta, z; B_g) into z's .grad; returns g (a `GraphedStep` then steps z by Adam)."""
        g = self.terms.loss("z", inputs, "g")
        g.backward()
        return g.detach()

    def upper_backward(self, inputs: Inputs) -> torch.Tensor:
        """grad_p [f(theta, p; B_f) + lam * g(theta, p; B_g)] into p's .grad; returns [f, g_p].

        Two backward passes of one batch each, so the peak memory is that of an FO-PEFT step."""
        f = self.terms.loss("p", inputs, "f")
        f.backward()
        g_p = self.terms.loss("p", inputs, "g")
        (self.lam * g_p).backward()
        return torch.stack([f.detach(), g_p.detach()])

    def penalty(self, inputs: Inputs) -> torch.Tensor:
        """F(theta, p, z) = f(theta, p) + lam * (g(theta, p) - g(theta, z)), times the normalising scale."""
        f, g_p, g_z = self.terms.at_once(inputs)
        return self.scale * (f + self.lam * (g_p - g_z))

    def flush(self) -> None:
        self.theta.flush()

    def seed_trajectory(self) -> Trajectory | None:
        return self.theta.trajectory

    def state_dict(self) -> dict:
        return {"opt_z": plain_state_dict(self.opt_z), "opt_p": plain_state_dict(self.opt_p),
                "theta": self.theta.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        load_optimizer_state(self.opt_z, state["opt_z"])
        load_optimizer_state(self.opt_p, state["opt_p"])
        self.lower.reset()
        self.upper.reset()
        self.theta.load_state_dict(state["theta"])


@METHODS.register("bilevel-fo")
class BilevelFO(BilevelZOFO):
    """Algorithm 1: the same penalty method with a backprop gradient for theta (the ZO method's reference)."""

    Backbone = BackpropOptimizer
    shards_backbone = False
