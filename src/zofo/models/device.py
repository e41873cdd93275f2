"""Host-to-device copies that never make the host wait for the device."""

from __future__ import annotations

import torch
from torch import Tensor


def upload(t: Tensor, device: torch.device | str) -> Tensor:
    """`t` on `device`. A CPU tensor bound for a GPU goes through pinned memory with a non-blocking copy: a
    plain copy from pageable memory waits until the device's queue drains, which would stall a training step
    that reads nothing back. (The pinned buffer is kept until the copy is done by torch's host allocator.)"""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
