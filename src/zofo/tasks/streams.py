"""Seeded, resumable streams of training batches (examples in, encoded tensors out)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from zofo.tasks.example import Example


class ExampleStream:
    """Endless batches of examples: a fresh seeded shuffle every epoch; state = (epoch, position)."""

    def __init__(self, examples: Sequence[Example], batch_size: int, seed: int):
        if not examples:
            raise ValueError("an example stream needs at least one example")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next(self) -> list[Example]:
        batch = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            batch.append(self.examples[self._order[self.position]])
            self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._shuffled(self.epoch)


class Batches:
    """Named example streams (train, upper, lower) and the encoder that turns examples into tensors. ``share``
    (data parallelism): what this process takes of each batch that every process draws alike."""

    def __init__(self, streams: dict[str, ExampleStream], encode: Callable[[list[Example]], Any],
                 share: Callable[[list[Example]], list[Example]] | None = None):
        self.streams = streams
        self.encode = encode
        self.share = share

    def examples(self, name: str) -> list[Example]:
        batch = self.streams[name].next()
        return self.share(batch) if self.share is not None else batch

    def next(self, name: str) -> Any:
        return self.encode(self.examples(name))

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {name: stream.state_dict() for name, stream in self.streams.items()}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        for name, stream_state in state.items():
            self.streams[name].load_state_dict(stream_state)
