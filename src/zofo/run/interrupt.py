"""A graceful stop: the first SIGINT (Ctrl-C) or SIGTERM asks the training loop to finish its current step (or
the current batch of a dev evaluation), save a checkpoint and stop (`TrainingInterrupted`), and says so at once; a
second one acts as it would have without us (Ctrl-C raises KeyboardInterrupt, SIGTERM ends the process).

    with stop_on_signal() as stop:
        train_loop(..., stop=stop)      # checks stop.requested after every step and every evaluation batch

A process that seems stuck can be asked where it is: `kill -USR1 PID` writes every thread's Python stack to its
stderr and it goes on (`stacks_on_request`, set by the `zofo` command and the study's worker processes).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zofo.stop import StopRequest

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after step ``step``; its checkpoint is ``checkpoint``."""

    def __init__(self, step: int, checkpoint: Path, signum: int, resume: str | None = None):
        self.step, self.checkpoint, self.signum = step, Path(checkpoint), signum
        resume = resume or f"zofo train --resume {self.checkpoint}"  # a command built on the loop names its own
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; the checkpoint "
                         f"{self.checkpoint} holds everything so far (continue with `{resume}`, which reads the "
                         "run's settings)")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


@contextmanager
def stop_on_signal(kept: str = "with a checkpoint") -> Iterator[StopRequest]:
    """A `StopRequest` that the first SIGINT or SIGTERM sets, for the duration of the block. Signal handlers
    belong to the main thread; elsewhere (runs trained side by side in threads) the request is never set.
    ``kept``: what the notice says a stop keeps."""
    request = StopRequest()

    def ask_to_stop(signum: int, frame) -> None:
        request.signal = signum
        for other, handler in previous.items():  # a second signal is not ours to soften
            signal.signal(other, handler)
        say_stopping(signum, kept)

    with handling_signals(ask_to_stop) as previous:
        yield request


def say_stopping(signum: int, kept: str = "with a checkpoint") -> None:
    """Tell the user at once that the stop is under way: a step or an evaluation batch can take minutes. Written
    with os.write: the handler may run while the main thread is inside a write to sys.stderr (a progress bar),
    and a buffered stream refuses a reentrant write."""
    again = "Ctrl-C again" if signum == signal.SIGINT else f"a second {signal.Signals(signum).name}"
    text = (f"\nzofo: {signal.Signals(signum).name} received: stopping after the current step or evaluation "
            f"batch, {kept} ({again} stops at once, without it)\n")
    try:
        os.write(sys.stderr.fileno(), text.encode())
    except (OSError, ValueError, AttributeError):  # no usable stderr (closed, or replaced by an object without fd)
        pass


@contextmanager
def handling_signals(handler: Callable[[int, Any], None]) -> Iterator[dict[int, Any]]:
    """``handler`` for SIGINT and SIGTERM for the duration of the block, then the previous handlers again; yields
    those. Only the main thread may set handlers (and only it receives signals): elsewhere nothing is set."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {signum: signal.getsignal(signum) or signal.SIG_DFL for signum in SIGNALS}  # None: set outside Python
    for signum in SIGNALS:
        signal.signal(signum, handler)
    try:
        yield previous
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


def stacks_on_request() -> bool:
    """Make SIGUSR1 write every thread's Python stack to stderr (a run's log) while the process goes on; returns
    whether it could (there is no SIGUSR1 on Windows, and no stderr with a file descriptor in some embeddings).
    faulthandler writes from the signal itself, so a process answers even where a thread holding the interpreter's
    lock never returns, when no Python handler would run."""
    if not hasattr(signal, "SIGUSR1"):
        return False
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    except (AttributeError, ValueError, OSError, RuntimeError):  # sys.stderr None, closed, or without fileno()
        return False
    return True
