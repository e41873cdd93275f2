"""What checkpoint/ and best/ keep of the trained weights: all of them, or a ZO backbone as its seed trajectory.

A backbone that only ZO updates change (mezo, bilevel-zofo) is its base weights plus the updates the trainer applied
(`zo.Trajectory`, about 80 bytes a step). In the "trajectory" form (`train.checkpoint_weights`, the default)
checkpoint/ and best/ keep that trajectory and the other trained parameters (the PEFT modules) instead of the
backbone's weights; final/ alone holds them (`final/backbone.safetensors`):

    save:  weights.safetensors <- trainable parameters less the backbone
           trajectory          <- checkpoint/: inside the method's state (method_state.json); best/: trajectory.json
    load:  theta <- the base weights (as the run loads them);  theta <- zo.replay(theta, trajectory)  (as `zofo replay`)

Updates deferred by `zo.update_every` and not yet applied are neither in the weights nor in the trajectory: the
checkpoint keeps them as pending records in the method's state, so base + trajectory is exactly the checkpoint's
theta. Probing never writes theta and stochastic rounding draws its bits from the seeds, so the replay is
bit-identical on the same kind of device (docs/ZO_ENGINE.md). The form falls back to full weights where the
backbone has no trajectory (methods that train it by gradients) or one that does not start at the base weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from zofo import zo
from zofo.atomic import written_whole
from zofo.errors import ZofoError
from zofo.methods.base import Method
from zofo.run.checkpoint import load_weights, save_weights
from zofo.zo.optimizer import rule_of
from zofo.zo.shards import copy_whole_

#: how loop.json names the form of a checkpoint's backbone (a checkpoint without the key holds its weights)
BACKBONE_KEY = "backbone"


def kept_trajectory(method: Method, form: str) -> zo.Trajectory | None:
    """The trajectory that stands for the backbone in checkpoint/ and best/, or None where its weights are kept."""
    trajectory = method.seed_trajectory()
    if form != "trajectory" or trajectory is None or not trajectory.complete:
        return None
    return trajectory


def kept_params(method: Method, as_trajectory: bool) -> dict[str, nn.Parameter]:
    """The parameters whose weights are saved: every trained one, less the backbone where a trajectory stands for it."""
    params = method.trainable()
    if not as_trajectory:
        return params
    return {name: p for name, p in params.items() if name not in method.groups.backbone}


def checkpoint_form(method: Method, form: str) -> str:
    """The value of loop.json's `BACKBONE_KEY` for a checkpoint saved now: "trajectory" or "weights"."""
    return "trajectory" if kept_trajectory(method, form) is not None else "weights"


def replay_onto(backbone: Mapping[str, nn.Parameter], trajectory: zo.Trajectory) -> None:
    """theta (holding the base weights) <- every update of ``trajectory``, by the rule the run used."""
    zo.replay(backbone, trajectory, rule_of(trajectory.rule))


def save_best(method: Method, folder: Path, form: str) -> None:
    """Keep the method's current trained parameters in ``folder`` (best/) in ``form``, written whole (a kill between
    the adapters and the trajectory would have left one step's adapters with another step's backbone)."""
    trajectory = kept_trajectory(method, form)
    with written_whole(folder) as partial:
        save_weights(kept_params(method, trajectory is not None), partial / "weights.safetensors")
        if trajectory is not None:
            trajectory.save(partial / "trajectory.json")


def load_best(method: Method, folder: Path, base: Callable[[], Mapping[str, torch.Tensor]]) -> None:
    """Set the method's trained parameters to what ``folder`` (best/) keeps. A backbone kept as a trajectory is
    rebuilt from ``base()`` (the base backbone's weights, by name) by replaying it, unless it is the trajectory the
    backbone has now (the best was the last evaluation); the method's own trajectory is left as it is."""
    trajectory_file = folder / "trajectory.json"
    as_trajectory = trajectory_file.exists()
    if as_trajectory:
        best = zo.Trajectory.from_dict(json.loads(trajectory_file.read_text()))
        if best.records() != method.seed_trajectory().records():
            backbone, weights = method.groups.backbone, base()
            if set(weights) != set(backbone):
                raise ZofoError(f"the base model's parameters differ from the run's backbone (e.g. "
                                f"{sorted(set(weights) ^ set(backbone))[:1]}); cannot rebuild {trajectory_file}",
                                "evaluate with the model the run trained, or train with checkpoint_weights=full")
            for name, param in backbone.items():
                copy_whole_(param, weights[name])  # a sharded backbone: each rank its own rows
            replay_onto(backbone, best)
    load_weights(kept_params(method, as_trajectory), folder / "weights.safetensors")
