"""Schedules: step -> value (learning rates, and any other scheduled scalar)."""

from __future__ import annotations

import math
from collections.abc import Callable

from zofo.errors import ZofoError

Schedule = Callable[[int], float]
SCHEDULES = ("constant", "linear", "cosine")


def make_schedule(kind: str, peak: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """`peak` after a linear warm-up of `warmup_steps`, then constant, linear or cosine decay to 0."""
    if kind not in SCHEDULES:
        raise ZofoError(f"unknown schedule {kind!r}", f"use one of: {', '.join(SCHEDULES)}")

    def value(step: int) -> float:
        if step < warmup_steps:
            return peak * (step + 1) / warmup_steps
        if kind == "constant":
            return peak
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "linear":
            return peak * (1.0 - progress)
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))

    return value
