"""Learning-rate schedules as plain callables step -> lr (step counts from 0)."""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]


def _warm(lr: float, step: int, warmup: int) -> float | None:
    return lr * (step + 1) / warmup if step < warmup else None


def constant(lr: float, warmup: int = 0) -> Schedule:
    """lr after a linear warm-up of ``warmup`` steps."""
    return lambda step: _warm(lr, step, warmup) or lr


def linear(lr: float, total_steps: int, warmup: int = 0, final: float = 0.0) -> Schedule:
    """Warm-up, then linear decay from lr to ``final`` at ``total_steps``."""

    def f(step: int) -> float:
        w = _warm(lr, step, warmup)
        frac = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return w if w is not None else lr + (final - lr) * frac

    return f


def cosine(lr: float, total_steps: int, warmup: int = 0, final: float = 0.0) -> Schedule:
    """Warm-up, then final + (lr - final) * (1 + cos(pi * progress)) / 2."""

    def f(step: int) -> float:
        w = _warm(lr, step, warmup)
        frac = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return w if w is not None else final + (lr - final) * 0.5 * (1.0 + math.cos(math.pi * frac))

    return f
