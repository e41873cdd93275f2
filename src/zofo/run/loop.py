"""THE training loop: step, log, evaluate on dev, keep the best, checkpoint. Same for every method.

A stop asked for by a signal (`zofo.run.interrupt`) ends it after the current step, with a checkpoint that a resumed
run continues from exactly (`TrainingInterrupted`).

A step's metrics may be device scalars (a ZO step on CUDA reads nothing back, so the host runs ahead of the
device); they are read only at logging steps, and `step_seconds` is the mean wall-clock per step since the
previous log (after that read, so it counts the device's time too), evaluations and checkpoints left out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zofo.methods.base import Method
from zofo.models.work import WorkCounter
from zofo.run.checkpoint import load_checkpoint, save_checkpoint, save_weights
from zofo.run.interrupt import StopRequest, TrainingInterrupted
from zofo.run.logs import PeakMemory, RunLogger


def _read(metrics: dict) -> dict:
    """The metrics as host numbers (one sync if any is a device scalar)."""
    return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}


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


def train_loop(method: Method, evaluate_dev: Callable[[], dict], run_dir: Path, settings: LoopSettings,
               logger: RunLogger, memory: PeakMemory, state: LoopState, stop: StopRequest | None = None) -> LoopState:
    """Run `method.step` from `state.step` to `settings.steps`; returns the final state. If ``stop`` is requested,
    saves a checkpoint after the current step and raises `TrainingInterrupted`."""
    if state.step == 0:
        _evaluate(method, evaluate_dev, run_dir, settings, logger, memory, state)
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
            metrics = _read(metrics)
            state.skipped_steps += _count(skipped)
            seconds = (time.perf_counter() - window_start) / window_steps
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", step_s=f"{seconds:.3f}")
            logger.log(state.step, "train", **metrics, step_seconds=seconds)
            window_start, window_steps, skipped = time.perf_counter(), 0, []
        out_of_time = _past(settings.max_seconds, logger.elapsed()) or _past(settings.max_train_seconds,
                                                                            logger.train_elapsed())
        last = settings.steps if not out_of_time else state.step
        interrupted = stop is not None and stop.requested
        evaluate = _due(state.step, settings.eval_every, last)  # a due evaluation still runs: the resumed run
        save = _due(state.step, settings.save_every, last) or interrupted  # will not evaluate this step again
        if evaluate:
            _evaluate(method, evaluate_dev, run_dir, settings, logger, memory, state)
        if save:
            _settle(method.model)
            with logger.off_the_clock():
                state.skipped_steps, skipped = state.skipped_steps + _count(skipped), []
                state.elapsed, state.off_clock = logger.elapsed(), logger.off_clock
                save_checkpoint(run_dir / "checkpoint", method.trainable(), method.state_dict(), asdict(state)
                                | {"batches": method.batches.state_dict()})
        if evaluate or save:  # step_seconds leaves them out
            window_start, window_steps = time.perf_counter(), 0
        if interrupted:
            bar.close()
            counter.close()
            raise TrainingInterrupted(state.step, run_dir / "checkpoint", stop.signal)
        if out_of_time:
            break
    bar.close()
    counter.close()
    state.skipped_steps += _count(skipped)
    method.flush()  # the weights a run ends with include every update it made
    return state


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
              logger: RunLogger, memory: PeakMemory, state: LoopState) -> None:
    """Dev evaluation, off the training clock; the best-scoring weights so far are kept in run_dir/best (dev
    only, never test)."""
    _settle(method.model)
    with logger.off_the_clock():
        with memory.phase("eval"), method.deployed():
            result = evaluate_dev()
        logger.log(state.step, "dev", **{k: v for k, v in result.items() if isinstance(v, (int, float))})
        value = result[settings.metric]
        if value > state.best_metric:
            state.best_metric, state.best_step = value, state.step
            (run_dir / "best").mkdir(exist_ok=True)
            save_weights(method.trainable(), run_dir / "best" / "weights.safetensors")
    if settings.progress:
        tqdm.write(f"step {state.step}: dev {settings.metric} {value:.4f} (best {state.best_metric:.4f} "
                   f"at step {state.best_step})")


def resume(method: Method, checkpoint: Path, logger: RunLogger) -> LoopState:
    """Restore weights, method state, data streams and loop counters from a checkpoint."""
    method_state, loop_state = load_checkpoint(checkpoint, method.trainable())
    method.load_state_dict(method_state)
    method.batches.load_state_dict(loop_state.pop("batches"))
    state = LoopState(**loop_state)
    logger.resume_from(state.step, state.elapsed, state.off_clock)
    return state
