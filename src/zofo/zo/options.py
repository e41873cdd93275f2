"""The ZO settings every zeroth-order method shares: the YAML section `zo:`, plain values and their checks.

    zo:
      eps: 1.0e-3          # perturbation scale
      q: 1                 # directions per step
      rule: sgd            # update rule: sgd | momentum | adam

No torch here: the run layer builds this section with the rest of the config (`zofo.config.build`) and checks it
(`ZOOptions.check`) before anything loads; `zo.optimizer.ZOOptimizer` takes it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zofo.errors import ZofoError

#: names of the direction distributions (`zo.directions`)
DIRECTIONS: tuple[str, ...] = ("gaussian", "gaussian16", "rademacher")
#: names of the update rules (`zo.optimizer.UPDATE_RULES`)
RULES: tuple[str, ...] = ("sgd", "momentum", "adam")


@dataclass(frozen=True)
class ZOOptions:
    """How a ZO method probes and updates: SPSA with `q` seeded directions at scale `eps`, then `rule`."""

    eps: float = 1e-3                   # perturbation scale (paper: 1e-3)
    q: int = 1                          # directions per step
    two_sided: bool = True              # (L(+eps u) - L(-eps u)) / 2 eps; False: one-sided against L(theta)
    direction: str = "gaussian"         # gaussian | gaussian16 | rademacher
    probed_direction: bool = True       # bf16/fp16 theta: update along the direction the probes realised
    update_every: int = 0               # ZO-SGD: apply the updates of k steps in one rounding pass;
                                        # 0: auto (16 for bf16/fp16 weights, else 1)
    rule: str = "sgd"                   # update rule: sgd | momentum | adam
    momentum: float = 0.9               # the momentum rule's beta

    #: keys of earlier configs, still read (with a warning naming the new key): old dotted key -> field
    RENAMED: ClassVar[dict[str, str]] = {
        "optim.eps": "eps", "optim.q": "q", "optim.two_sided": "two_sided", "optim.direction": "direction",
        "optim.probed_direction": "probed_direction", "optim.update_every": "update_every",
        "optim.theta_update": "rule", "optim.momentum": "momentum"}

    def check(self) -> None:
        """Refuse values no ZO method can use; each error names its key (`zo.<field>`)."""
        for key, value, names in (("zo.direction", self.direction, DIRECTIONS), ("zo.rule", self.rule, RULES)):
            if value not in names:
                raise ZofoError(f"unknown {key} {value!r}", f"use one of: {', '.join(names)}", key)
        if self.eps <= 0:
            raise ZofoError(f"zo.eps must be > 0, got {self.eps}", "the paper uses 1e-3", "zo.eps")
        if self.q < 1:
            raise ZofoError(f"zo.q must be positive, got {self.q}", "give zo.q 1 or more (probes a step)", "zo.q")
        if not 0 <= self.momentum < 1:
            raise ZofoError(f"zo.momentum must be in [0, 1), got {self.momentum}", "the usual value is 0.9",
                            "zo.momentum")
        check_update_every(self.update_every, self.rule)


def check_update_every(every: int, rule: str) -> None:
    """`update_every` >= 0, and > 1 only with ZO-SGD (the other rules keep state that a deferred step would skip)."""
    if not isinstance(every, int) or every < 0:
        raise ZofoError(f"zo.update_every must be an integer >= 0, got {every!r}",
                        "use 0 (auto), 1 (no deferral) or e.g. 16", "zo.update_every")
    if every > 1 and rule != "sgd":
        raise ZofoError(f"zo.update_every={every} needs zo.rule=sgd (got {rule!r})",
                        "set zo.update_every=1 or zo.rule=sgd", "zo.update_every")
