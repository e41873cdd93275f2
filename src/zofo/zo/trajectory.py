"""Seed trajectories: a ZO run written as its base weights plus, per update, seeds and projected gradients.

    for each update the trainer applied (a deferred one: the chained record of the steps it merged):
        record <- (seeds, c_1..c_q, lr)
    replay:  theta <- base weights;  for each record: theta <- rule(theta, c, u(seeds), lr)

u is a pure function of (seed, tensor key, element) and stochastic rounding's bits of (seeds[0], tensor key,
element), so replaying the records through the same update rule, from the same base weights, on the same kind of
device, rebuilds the trained weights bit for bit (tested on the CPU, queued device estimates included, and on an
H200 for the GPU path: graphed probes, estimates queued and chained on the device). One direction per step is about
80 bytes of JSON: a 20k-step full fine-tune of any size is under two megabytes, where its weights are gigabytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .estimators import AnyEstimate, DeviceEstimate, ZOEstimate
from .updates import Params, UpdateState, ZOUpdate

FORMAT = 1
READ_BACK_EVERY = 256  # updates between read-backs of device estimates


@dataclass
class Trajectory:
    """The updates applied to ``params`` (names, in the order the rule visits them), and how they were probed.

    ``rule`` names the update rule and its settings (what `zo.optimizer.update_rule` takes); ``complete`` is
    False when the run resumed from a checkpoint that predates trajectories, so the records do not start at the
    base weights.
    """

    params: list[str]
    direction: str
    eps: float
    two_sided: bool
    rule: dict[str, Any]
    complete: bool = True
    updates: list[dict | tuple[AnyEstimate, float]] = field(default_factory=list)

    def record(self, estimate: AnyEstimate, lr: float) -> None:
        """Note one applied update. Device estimates are read back in batches of `READ_BACK_EVERY` (one host
        sync each), so a long run keeps no more than that many small device tensors alive."""
        self.updates.append((estimate, lr))
        if len(self.updates) % READ_BACK_EVERY == 0:
            self.records()

    def records(self) -> list[dict]:
        """Every update as {"seeds", "projected_grads", "lr"} (device estimates read back here, once)."""
        self.updates = [u if isinstance(u, dict) else as_record(*u) for u in self.updates]
        return list(self.updates)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "params": self.params, "direction": self.direction, "eps": self.eps,
                "two_sided": self.two_sided, "rule": self.rule, "complete": self.complete,
                "updates": self.records()}

    @classmethod
    def from_dict(cls, data: dict) -> Trajectory:
        if data.get("format") != FORMAT:
            raise ValueError(f"trajectory format {data.get('format')!r}, expected {FORMAT}")
        return cls(list(data["params"]), data["direction"], float(data["eps"]), bool(data["two_sided"]),
                   dict(data["rule"]), bool(data["complete"]), list(data["updates"]))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> Trajectory:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def estimates(self) -> list[tuple[ZOEstimate, float]]:
        """The records as (estimate, lr) pairs an update rule applies."""
        return [from_record(r, self.direction, self.eps, self.two_sided) for r in self.records()]


def as_record(estimate: AnyEstimate, lr: float) -> dict:
    """{"seeds", "projected_grads", "lr"} with the c_i as the update uses them: a device estimate's values as the
    device computed them (its sum of the loss terms; zeros where it was skipped), not a host re-summation."""
    grads = estimate.projected_grads
    values = grads.cpu().tolist() if isinstance(estimate, DeviceEstimate) else list(grads)
    return {"seeds": [int(s) for s in estimate.seeds], "projected_grads": [float(c) for c in values], "lr": float(lr)}


def from_record(record: dict, direction: str, eps: float, two_sided: bool) -> tuple[ZOEstimate, float]:
    """`as_record` undone: the (estimate, lr) an update rule applies, probed as ``direction``, ``eps``, sidedness."""
    grads = [float(c) for c in record["projected_grads"]]
    return ZOEstimate(list(record["seeds"]), grads, [], direction, eps=eps, two_sided=two_sided), float(record["lr"])


def replay(params: Params, trajectory: Trajectory, rule: ZOUpdate) -> UpdateState:
    """Apply the trajectory's updates to ``params`` (holding the base weights), in order; returns the rule's state."""
    if not trajectory.complete:
        raise ValueError("this trajectory does not start at the base weights (the run resumed from a checkpoint "
                         "made before trajectories were recorded)")
    if list(params) != trajectory.params:
        missing = sorted(set(trajectory.params) - set(params))
        raise ValueError(f"the parameters differ from the trajectory's ({len(params)} against "
                         f"{len(trajectory.params)}; e.g. missing {missing[:1]}): build the model as the run did")
    state = rule.init(params)
    for estimate, lr in trajectory.estimates():
        state = rule.apply(params, estimate, lr, state)
    return state
