"""BIG-bench tasks without a local copy: taken from the `bigbench==1.0.0` source distribution on PyPI.

The sdist (~360 MB, Apache-2.0) is downloaded once with pip into `$ZOFO_CACHE/pypi` (default
`~/.cache/zofo`; see `_older_pip` for why pip 25 does it). Only the asked-for
`bigbench/benchmark_tasks/<task>/task.json` is then extracted, to `$ZOFO_CACHE/bigbench/<task>/task.json`,
and later loads read that file directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from zofo.errors import ZofoError

REQUIREMENT = "bigbench==1.0.0"
SDIST_NAME = "bigbench-1.0.0.tar.gz"
TASKS_DIR = "bigbench-1.0.0/bigbench/benchmark_tasks"


def cache_dir() -> Path:
    """`$ZOFO_CACHE`, else `~/.cache/zofo`."""
    return Path(os.environ.get("ZOFO_CACHE") or Path.home() / ".cache" / "zofo")


def _pip(pip: list[str], args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*pip, *args], capture_output=True, text=True)


def _older_pip(folder: Path) -> list[str]:
    """A pip < 26 run straight from its wheel (pip's documented `python pip.whl/pip` form).

    pip 26 refuses any PyPI sdist whose metadata declares a direct-URL dependency, and bigbench 1.0.0
    declares `bleurt @ file://...`; we only want the archive, so the download uses the previous pip.
    """
    wheels = sorted(folder.glob("pip-*.whl"))
    if not wheels:
        _pip([sys.executable, "-m", "pip"], ["download", "--no-deps", "pip<26", "-d", str(folder)])
        wheels = sorted(folder.glob("pip-*.whl"))
    if not wheels:
        raise ZofoError("could not download pip<26 from PyPI", "check the network")
    return [sys.executable, str(wheels[-1] / "pip")]


def sdist_path() -> Path:
    """The cached sdist, downloaded with `pip download` the first time."""
    target = cache_dir() / "pypi"
    sdist = target / SDIST_NAME
    if sdist.is_file():
        return sdist
    target.mkdir(parents=True, exist_ok=True)
    args = ["download", "--no-deps", "--no-binary", ":all:", REQUIREMENT, "-d", str(target)]
    result = _pip([sys.executable, "-m", "pip"], args)
    if not sdist.is_file() and "direct URL" in result.stderr:
        result = _pip(_older_pip(target / "pip-tool"), args)
    if not sdist.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ZofoError(f"could not download {REQUIREMENT} from PyPI: {tail[0]}",
                        "check the network, or give --data with a local BIG-bench task folder")
    return sdist


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
