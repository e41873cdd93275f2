"""`zofo replay RUN`: rebuild a ZO run's backbone from its base model and seed trajectory.

    theta <- the base model, loaded and wrapped as the run did (same dtype, same PEFT attachment, so same names)
    theta <- zo.replay(theta, RUN/final/trajectory.json)          (every update the run applied, in order)
    compare with RUN/final/backbone.safetensors where the run saved it

The PEFT modules (Bilevel ZOFO's p and z) are trained by backprop and are not part of the trajectory: they are in
RUN/final/adapter, a few MB at most.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from zofo import zo
from zofo.errors import ZofoError
from zofo.run.checkpoint import save_weights
from zofo.run.options import RunConfig, load_config
from zofo.run.recipe import Run
from zofo.zo.optimizer import rule_of


@dataclass
class ReplayReport:
    """What a replay wrote, and how it compares with the weights the run saved (None where it saved none)."""

    out: Path
    steps: int      # ZO steps whose estimates were applied
    updates: int    # updates as the run applied them (a deferred one merges several steps)
    tensors: int
    identical: int | None = None        # tensors bit-identical to the run's own
    max_abs_diff: float | None = None   # largest elementwise difference over all tensors

    def summary(self) -> str:
        merged = "" if self.updates == self.steps else ", merged into the run's deferred updates"
        lines = [f"replayed {self.steps} steps ({self.updates} updates{merged}) onto {self.tensors} tensors -> "
                 f"{self.out}"]
        if self.identical is not None:
            lines.append(f"against the run's final/backbone.safetensors: {self.identical} of {self.tensors} tensors "
                         f"bit-identical, largest difference {self.max_abs_diff:.3g}")
        return "\n".join(lines)


def replay_run(run_dir: Path, out: Path | None = None, device: str | None = None) -> ReplayReport:
    """Rebuild the backbone of the run in ``run_dir`` (on ``device``, default the run's) and save it to ``out``."""
    run_dir = Path(run_dir)
    trajectory_file = run_dir / "final" / "trajectory.json"
    if not trajectory_file.exists():
        raise ZofoError(f"{trajectory_file} does not exist",
                        "replay a finished run of a method that updates the backbone by ZO (mezo, bilevel-zofo)")
    try:
        trajectory = zo.Trajectory.load(trajectory_file)
    except (ValueError, KeyError, TypeError) as error:  # json's errors are ValueErrors
        raise ZofoError(f"{trajectory_file} is not a zofo seed trajectory ({error!r})",
                        "pass the folder of a run that zofo train wrote, unchanged") from error
    cfg = load_config(run_dir / "config.yaml")
    params = base_backbone(cfg, device)
    try:
        zo.replay(params, trajectory, rule_of(trajectory.rule))
    except ValueError as error:
        raise ZofoError(f"cannot replay {trajectory_file}: {error}", "replay a run recorded from its start") from error
    out = Path(out) if out else run_dir / "final" / "backbone.replayed.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(params, out)
    steps = sum(len(record["seeds"]) for record in trajectory.records()) // cfg.zo.q
    report = ReplayReport(out, steps, len(trajectory.updates), len(params))
    saved = run_dir / "final" / "backbone.safetensors"
    if saved.exists():
        report.identical, report.max_abs_diff = compare(params, load_file(str(saved)))
    return report


def base_backbone(cfg: RunConfig, device: str | None) -> dict[str, torch.nn.Parameter]:
    """The base model's backbone parameters, loaded and named exactly as the run loaded them."""
    if device is not None:
        cfg = replace(cfg, model=replace(cfg.model, device=device))
    run = Run(cfg)
    if run.device.type == "cuda" and not torch.cuda.is_available():
        raise ZofoError(f"the run trained on {cfg.model.device!r}, and this machine has no CUDA device",
                        "replay it on a GPU machine, or pass --device cpu (bit-identical only for directions that "
                        "the CPU draws exactly as CUDA does, e.g. rademacher)")
    return run.build_model()[2].backbone


def compare(params: dict[str, torch.nn.Parameter], saved: dict[str, torch.Tensor]) -> tuple[int, float]:
    """(tensors bit-identical to ``saved``, the largest absolute difference over all of them)."""
    identical, worst = 0, 0.0
    for name, param in params.items():
        mine, theirs = param.detach().cpu(), saved[name]
        identical += int(torch.equal(mine, theirs))
        worst = max(worst, (mine.double() - theirs.double()).abs().max().item())
    return identical, worst

