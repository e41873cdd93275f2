"""Methods that do not train: zero-shot and in-context learning (the loop only evaluates them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zofo.errors import ZofoError
from zofo.methods.base import Method
from zofo.registry import METHODS


@METHODS.register("zero-shot")
class ZeroShot(Method):
    """The pretrained model as it is."""

    trains = False

    def step(self, step: int) -> dict[str, float]:
        raise RuntimeError(f"{type(self).__name__} does not train")


@dataclass(frozen=True)
class ICLOptions:
    """The YAML section `icl:`."""

    shots: int = 0                      # demonstrations before each prompt (seeded draw from the training set)

    #: keys of earlier configs, still read (with a warning naming the new key): old dotted key -> field
    RENAMED: ClassVar[dict[str, str]] = {"data.shots": "shots"}

    def check(self) -> None:
        if self.shots < 1:
            raise ZofoError("method icl needs --shots K with K >= 1", "e.g. --shots 16", "icl.shots")


@METHODS.register("icl")
class InContext(ZeroShot):
    """The pretrained model with k seeded demonstrations from the training set before each prompt."""

    section = "icl"
    Options = ICLOptions

    def demonstrations(self) -> int:
        return self.options.shots
