"""Methods that do not train: zero-shot and in-context learning (the loop only evaluates them)."""

from __future__ import annotations

from zofo.methods.base import Method
from zofo.registry import METHODS


@METHODS.register("zero-shot")
class ZeroShot(Method):
    """The pretrained model as it is."""

    trains = False

    def step(self, step: int) -> dict[str, float]:
        raise RuntimeError("zero-shot does not train")


@METHODS.register("icl")
class InContext(ZeroShot):
    """The pretrained model with k seeded demonstrations from the training set before each prompt."""
