"""Spawning the 2-rank (gloo) tests' processes: each rank joins the group on a fresh port, runs its scenarios, leaves
the group together with the others (`destroy_process_group` after a barrier), then exits with `os._exit(0)`, as
`zofo`'s own torchrun ranks do (`zofo.cli.main.entry`): with torch 2.13 a finished rank could still abort in the
interpreter's C++ teardown ("terminate called without an active exception"; 1 launch in 25-40 on a loaded CPU).

Should a rank still be killed by a signal, the ranks are spawned once more, into a new folder, and that is said on
stderr; a rank that raised a Python exception fails the test at once, with its traceback.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_as(rank: int, port: int) -> None:
    """This process as rank ``rank`` of WORLD under a torchrun-like environment, one thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def leave() -> None:
    """Every rank done: leave the process group together."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _rank(rank: int, port: int, main: Callable, args: tuple) -> None:
    join_as(rank, port)
    main(rank, *args)
    leave()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn_ranks(main: Callable, root_for: Callable[[int], Path], *args) -> Path:
    """Run ``main(rank, root, *args)`` on WORLD spawned ranks; returns the root they wrote (``root_for(attempt)``)."""
    for attempt in (0, 1):
        root = root_for(attempt)
        try:
            mp.start_processes(_rank, args=(free_port(), main, (root, *args)), nprocs=WORLD, start_method="spawn")
            return root
        except mp.ProcessExitedException as died:
            if attempt or not died.signal_name:
                raise
            print(f"tests/ranks.py: rank {died.error_index} was killed by {died.signal_name}; spawning the ranks once "
                  "more", file=sys.stderr)
    raise AssertionError("unreachable")
