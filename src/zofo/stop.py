"""A stop asked for while work runs: set by a signal handler (`zofo.run.interrupt`), read by the training loop
between steps and by an evaluation between batches. Torch-free, at the bottom of the layers, so that evaluation can
honour it without knowing about signals or runs."""

from __future__ import annotations


class StopRequest:
    """Set by a signal handler; read by the training loop between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None


class EvaluationStopped(Exception):
    """An evaluation gave up between two batches because a stop was requested; it has no result."""


def check_stop(stop: StopRequest | None) -> None:
    """Raise `EvaluationStopped` if ``stop`` is requested (called between evaluation batches)."""
    if stop is not None and stop.requested:
        raise EvaluationStopped
