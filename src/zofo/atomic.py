"""Folders that are there complete or not at all: written under another name and renamed when whole, so that a
process killed while saving (a checkpoint, a run's final weights, a converted model) never leaves a folder that
looks finished but is not; and saved weights readable as the process's umask says, like every other file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(folder: Path) -> Iterator[Path]:
    """A folder that is there complete or not at all: the body writes into FOLDER.partial, which replaces FOLDER
    when the body ends. A write killed half-way leaves FOLDER as it was, and FOLDER.partial beside it (safetensors'
    own temporary files included), which the next write of FOLDER clears."""
    partial, old = (restored(folder).with_name(folder.name + suffix) for suffix in (".partial", ".old"))
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    for file in partial.rglob("*.safetensors"):
        as_umask_allows(file)
    if folder.exists():  # two renames, so FOLDER is missing only between them; then the old one goes
        folder.replace(old)
    partial.replace(folder)
    shutil.rmtree(old, ignore_errors=True)


def encloses_current_folder(folder: Path) -> bool:
    """Whether ``folder`` is the current folder or one above it (the root included): replacing or deleting it
    whole would pull the current folder away."""
    here = Path.cwd().resolve()
    return folder.expanduser().resolve() in (here, *here.parents)


def restored(folder: Path) -> Path:
    """``folder``, put back from FOLDER.old where a save was killed between its two renames
    (`written_whole`): what a reader calls before it looks for a saved folder."""
    old = folder.with_name(folder.name + ".old")
    if old.is_dir() and not folder.exists():
        old.replace(folder)
    return folder


def as_umask_allows(file: Path) -> None:
    """Give ``file`` the mode a plain ``open`` would: safetensors (0.8) writes through a temporary file that is
    always 0600, so saved weights were readable by their owner alone (a shared cache or run folder unreadable by
    the rest of a team) while the config beside them was not."""
    os.chmod(file, 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (a change would be seen by other threads
    creating files meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
