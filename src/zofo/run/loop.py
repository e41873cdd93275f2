"""THE training loop: step, log, evaluate on dev, keep the best, checkpoint. Same for every method.

A stop asked for by a signal (`zofo.run.interrupt`) ends it after the current step, with a checkpoint that a resumed
run continues from exactly (`TrainingInterrupted`); a dev evaluation under way ends at its next batch, and the
resumed run evaluates that step again before it trains on.

A step's metrics may be device scalars (a ZO step on CUDA reads nothing back, so the host runs ahead of the
device); they are read only at logging steps, and `step_seconds` is the mean wall-clock per step since the
previous log (after that read, so it counts the device's time too), evaluations and checkpoints left out.

Under data parallelism (`LoopSettings.ranks`) every rank runs this loop in step: the logged metrics are those of the
whole batch (a value the ranks share as it is, else their mean), a stop or time-out on any rank stops all of them
after the same step, and rank 0 alone writes checkpoints and best/.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zofo.methods.base import Method
from zofo.models.work import WorkCounter
from zofo.ranks import Ranks
from zofo.run.checkpoint import load_checkpoint, save_checkpoint
from zofo.run.interrupt import TrainingInterrupted
from zofo.run.kept_weights import BACKBONE_KEY, checkpoint_form, kept_params, replay_onto, save_best
from zofo.run.logs import PeakMemory, RunLogger
from zofo.stop import EvaluationStopped, StopRequest


def _read(metrics: dict) -> dict:
    """The metrics as host numbers (one sync if any is a device scalar)."""
    return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}


def _agreed(metrics: dict, ranks: Ranks) -> dict:
    """The metrics of the whole batch: a value every rank holds alike as it is (a ZO loss, the lr, a seed), else
    the ranks' mean (an FO loss of each rank's share)."""
    if not ranks.parallel:
        return metrics
    every = ranks.gather(metrics)

    def agreed(key: str, value):
        if all(m[key] == value for m in every) or not all(isinstance(m[key], (int, float)) for m in every):
            return value
        return math.fsum(m[key] for m in every) / ranks.world

    return {k: agreed(k, v) for k, v in metrics.items()}


def _count(skipped: list) -> int:
    """How many of the steps whose `skipped` flags (ints or device scalars) are listed were skipped."""
    return int(sum(float(x) for x in skipped))


@dataclass
class LoopSettings:
    steps: int
    eval_every: int = 100      # 0: evaluate only before and after training
    log_every: int = 10
    save_every: int = 0        # 0: checkpoint only at the end
    metric: str = "accuracy"   # the dev number that picks the best checkpoint
    progress: bool = True
    max_seconds: float | None = None  # wall-clock budget: training stops at the first step past it
    max_train_seconds: float | None = None  # the same on `train_time` (evaluations and checkpoints left out)
    weights: str = "trajectory"  # what checkpoint/ and best/ keep of a ZO backbone: its trajectory, or full weights
    ranks: Ranks = field(default_factory=Ranks)  # the processes of a data-parallel run (rank 0 writes)


@dataclass
class LoopState:
    step: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    elapsed: float = 0.0
    off_clock: float = 0.0     # of `elapsed`, seconds in evaluations and checkpoints (not in `train_time`)
    skipped_steps: int = 0
    forward_rows: int = 0      # sequences through the model in training steps (zofo.models.work)
    backward_rows: int = 0     # ... of them back-propagated
    eval_pending: bool = False  # the dev evaluation of `step` was stopped by a signal: the resumed run does it


def train_loop(method: Method, evaluate_dev: Callable[[], dict], run_dir: Path, settings: LoopSettings,
               logger: RunLogger, memory: PeakMemory, state: LoopState, stop: StopRequest | None = None) -> LoopState:
    """Run `method.step` from `state.step` to `settings.steps`; returns the final state. If ``stop`` is requested,
    saves a checkpoint after the current step and raises `TrainingInterrupted`."""
    if state.step == 0 or state.eval_pending:
        _evaluate_start(method, evaluate_dev, run_dir, settings, logger, memory, state, stop)
    bar = tqdm(total=settings.steps, initial=state.step, disable=not settings.progress, desc="train",
               dynamic_ncols=True)
    counter = WorkCounter(method.model)
    counter.work.forward_rows, counter.work.backward_rows = state.forward_rows, state.backward_rows
    window_start, window_steps, skipped = time.perf_counter(), 0, []
    for step in range(state.step, settings.steps):
        with memory.phase("train_step"), counter.counting():
            metrics = method.step(step)
        state.forward_rows, state.backward_rows = counter.work.forward_rows, counter.work.backward_rows
        state.step, window_steps = step + 1, window_steps + 1
        skipped.append(metrics.get("skipped", 0))
        bar.update(1)
        if state.step % settings.log_every == 0 or state.step == settings.steps:
            metrics = _agreed(_read(metrics), settings.ranks)
            state.skipped_steps += _count(skipped)
            seconds = (time.perf_counter() - window_start) / window_steps
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", step_s=f"{seconds:.3f}")
            logger.log(state.step, "train", **metrics, step_seconds=seconds)
            window_start, window_steps, skipped = time.perf_counter(), 0, []
        out_of_time = _past(settings.max_seconds, logger.elapsed()) or _past(settings.max_train_seconds,
                                                                            logger.train_elapsed())
        interrupted, out_of_time = settings.ranks.any(stop is not None and stop.requested, out_of_time)
        last = settings.steps if not out_of_time else state.step
        evaluate = _due(state.step, settings.eval_every, last)
        if evaluate:  # a signal stops it at its next batch; the checkpoint then says to evaluate this step again
            state.eval_pending = not _evaluate(method, evaluate_dev, run_dir, settings, logger, memory, state)
        save = _due(state.step, settings.save_every, last) or interrupted
        if save:
            state.skipped_steps, skipped = state.skipped_steps + _count(skipped), []
            _save_checkpoint(method, run_dir, logger, settings, state)
        if evaluate or save:  # step_seconds leaves them out
            window_start, window_steps = time.perf_counter(), 0
        if interrupted:
            bar.close()
            counter.close()
            signum = stop.signal if stop is not None and stop.requested else signal.SIGTERM  # another rank's stop
            raise TrainingInterrupted(state.step, run_dir / "checkpoint", signum)
        if out_of_time:
            break
    bar.close()
    counter.close()
    state.skipped_steps += _count(skipped)
    method.flush()  # the weights a run ends with include every update it made
    return state


def _evaluate_start(method: Method, evaluate_dev: Callable[[], dict], run_dir: Path, settings: LoopSettings,
                    logger: RunLogger, memory: PeakMemory, state: LoopState, stop: StopRequest | None) -> None:
    """The dev evaluation before the first step (or the one a signal cut short, once resumed); stopped again by a
    signal, it saves the checkpoint and raises `TrainingInterrupted`."""
    state.eval_pending = not _evaluate(method, evaluate_dev, run_dir, settings, logger, memory, state)
    if state.eval_pending:
        _save_checkpoint(method, run_dir, logger, settings, state)
        raise TrainingInterrupted(state.step, run_dir / "checkpoint", stop.signal)


def _save_checkpoint(method: Method, run_dir: Path, logger: RunLogger, settings: LoopSettings,
                     state: LoopState) -> None:
    """run_dir/checkpoint, saved off the training clock (by rank 0): the trained weights (the backbone as its seed
    trajectory, which the method's state holds, where `settings.weights` allows), the method's state, the data
    streams and the loop counters; what a resumed run continues from."""
    _settle(method.model)
    with logger.off_the_clock():
        state.elapsed, state.off_clock = logger.elapsed(), logger.off_clock
        backbone = checkpoint_form(method, settings.weights)
        if not settings.ranks.writes:
            return
        save_checkpoint(run_dir / "checkpoint", kept_params(method, backbone == "trajectory"), method.state_dict(),
                        asdict(state) | {"batches": method.batches.state_dict(), BACKBONE_KEY: backbone})


def _settle(model) -> None:
    """Wait until the training steps queued on the model's CUDA stream have run, so that they count as
    training time, not as the evaluation or checkpoint that follows (steps do not wait for the device;
    only this run's stream is waited for, which is safe beside other runs' graph captures)."""
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if param is not None and param.is_cuda:
        torch.cuda.current_stream(param.device).synchronize()


def _past(budget: float | None, seconds: float) -> bool:
    return budget is not None and seconds > budget


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _evaluate(method: Method, evaluate_dev: Callable[[], dict], run_dir: Path, settings: LoopSettings,
              logger: RunLogger, memory: PeakMemory, state: LoopState) -> bool:
    """Dev evaluation, off the training clock; the best-scoring weights so far are kept in run_dir/best (dev
    only, never test). False if a signal stopped it (`EvaluationStopped`): nothing is logged or kept."""
    _settle(method.model)
    with logger.off_the_clock():
        try:
            with memory.phase("eval"), method.deployed():
                result = evaluate_dev()
        except EvaluationStopped:
            return False
        logger.log(state.step, "dev", **{k: v for k, v in result.items() if isinstance(v, (int, float))})
        value = result[settings.metric]
        if value > state.best_metric:
            state.best_metric, state.best_step = value, state.step
            if settings.ranks.writes:
                save_best(method, run_dir / "best", settings.weights)
    if settings.progress:
        tqdm.write(f"step {state.step}: dev {settings.metric} {value:.4f} (best {state.best_metric:.4f} "
                   f"at step {state.best_step})")
    return True


def resume(method: Method, checkpoint: Path, logger: RunLogger) -> LoopState:
    """Restore weights, method state, data streams and loop counters from a checkpoint. A backbone kept as its
    seed trajectory is rebuilt by replaying it onto the base weights, which the method's freshly loaded model holds."""
    as_trajectory = checkpoint_backbone(checkpoint) == "trajectory"
    method_state, loop_state = load_checkpoint(checkpoint, kept_params(method, as_trajectory))
    method.load_state_dict(method_state)
    if as_trajectory:
        replay_onto(method.groups.backbone, method.seed_trajectory())
    method.batches.load_state_dict(loop_state.pop("batches"))
    loop_state.pop(BACKBONE_KEY, None)
    state = LoopState(**loop_state)
    logger.resume_from(state.step, state.elapsed, state.off_clock)
    return state


def checkpoint_backbone(checkpoint: Path) -> str:
    """How a checkpoint keeps the backbone: "trajectory" or "weights" (checkpoints written before the key: weights)."""
    loop_file = checkpoint / "loop.json"
    return json.loads(loop_file.read_text()).get(BACKBONE_KEY, "weights") if loop_file.exists() else "weights"
