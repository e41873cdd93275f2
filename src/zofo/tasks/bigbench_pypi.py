"""BIG-bench tasks without a local copy: taken from the `bigbench==1.0.0` source distribution on PyPI.

The sdist (~360 MB, Apache-2.0) is downloaded once with pip into `$ZOFO_CACHE/pypi` (default
`~/.cache/zofo`; see `zofo.models.pypi._older_pip` for why an older pip may do it). Only the asked-for
`bigbench/benchmark_tasks/<task>/task.json` is then extracted, to `$ZOFO_CACHE/bigbench/<task>/task.json`,
and later loads read that file directly.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from zofo.errors import ZofoError
from zofo.models.pypi import cache_dir, download

REQUIREMENT = "bigbench==1.0.0"
TASKS_DIR = "bigbench-1.0.0/bigbench/benchmark_tasks"


def sdist_path() -> Path:
    """The cached sdist, downloaded with `pip download` the first time."""
    try:
        return download(REQUIREMENT, cache_dir() / "pypi", source=True)
    except ZofoError as err:
        raise ZofoError(err.what, "check the network, or give --data with a local BIG-bench task folder") from err


def _extract(sdist: Path, task: str, dest: Path) -> bool:
    """Copy one task.json out of the sdist (streamed, nothing else written); False if it is not there."""
    member = f"{TASKS_DIR}/{task}/task.json"
    with tarfile.open(sdist, "r:gz") as archive:
        for info in archive:
            if info.name == member and info.isfile():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(archive.extractfile(info).read())
                return True
    return False


def available_tasks(sdist: Path) -> list[str]:
    """Names (with sub-task paths such as `arithmetic/1_digit_addition`) of the tasks in the sdist."""
    with tarfile.open(sdist, "r:gz") as archive:
        return sorted(name[len(TASKS_DIR) + 1: -len("/task.json")] for name in archive.getnames()
                      if name.startswith(TASKS_DIR) and name.endswith("/task.json"))


def fetch_task_json(task: str) -> Path:
    """Path of `<task>/task.json` in the cache, fetched from the PyPI sdist if needed."""
    if not task or ".." in Path(task).parts or task.startswith("/"):
        raise ZofoError(f"bad BIG-bench task name {task!r}", "use e.g. bigbench:strategyqa")
    dest = cache_dir() / "bigbench" / task / "task.json"
    if dest.is_file():
        return dest
    sdist = sdist_path()
    if not _extract(sdist, task, dest):
        names = available_tasks(sdist)
        raise ZofoError(f"BIG-bench has no task {task!r}", f"choose one of: {', '.join(names[:40])}, ...")
    return dest
