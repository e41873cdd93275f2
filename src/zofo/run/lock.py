"""A run folder's lock (RUN/.lock), so that one run, meta-train or meta-test at a time works in it: a second one
would mix its files with the first's, or clear a folder the first is still writing."""

from __future__ import annotations

import errno
import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zofo.errors import ZofoError


@contextmanager
def locked(out_dir: Path, what: str = "meta-test") -> Iterator[int]:
    """The folder's lock (OUT/.lock), held for the block; yields its descriptor, which workers inherit so that the
    lock lasts while any of them runs. A second `what` (zofo train, meta-train, meta-test) on the folder is refused
    meanwhile."""
    fd = os.open(Path(out_dir) / ".lock", os.O_CREAT | os.O_RDWR, 0o666)  # an ordinary file, not executable
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ZofoError(f"another {what} is running on {out_dir} (it holds {Path(out_dir) / '.lock'})",
                        "wait for it to end, or give another --out") from None
    except OSError as err:  # a filesystem without flock (Lustre mounted without it): run, unguarded
        if err.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP):
            raise
        warnings.warn(f"{out_dir} cannot be locked ({err.strerror}): run one {what} at a time on it", stacklevel=3)
    try:
        yield fd
    finally:
        os.close(fd)
