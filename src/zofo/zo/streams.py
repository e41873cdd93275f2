"""A second CUDA stream, for work that should overlap the current stream's (perturbing the next layer)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_SIDE: dict[torch.device, torch.cuda.Stream] = {}


def side_stream(device: torch.device) -> torch.cuda.Stream | None:
    """``device``'s side stream; None off CUDA, or where it would be the current stream."""
    if device.type != "cuda":
        return None
    device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    if device not in _SIDE:
        _SIDE[device] = torch.cuda.Stream(device)
    side = _SIDE[device]
    return None if side == torch.cuda.current_stream(device) else side


@contextmanager
def launched_on(side: torch.cuda.Stream | None) -> Iterator[None]:
    """Kernels launched in the block run on ``side``, after all that is already queued on the current stream.

    Allocate their outputs before the block (on the current stream), and make the current stream wait for an
    event recorded on ``side`` before it reads them. ``side=None``: the block runs on the current stream.
    """
    if side is None:
        yield
        return
    side.wait_stream(torch.cuda.current_stream(side.device))
    with torch.cuda.stream(side):
        yield
