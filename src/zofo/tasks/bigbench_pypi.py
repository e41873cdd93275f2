"""BIG-bench tasks from the `bigbench==1.0.0` source distribution (~360 MB, Apache-2.0): the last two places
`bigbench:NAME` is looked for (see `zofo.tasks.bigbench_sources` for the whole order).

- the cache: a task extracted earlier (`$ZOFO_CACHE/bigbench/<task>/task.json`), or the sdist already in
  `$ZOFO_CACHE/pypi` (downloaded before, or put there by hand);
- the package index: `pip download bigbench==1.0.0` into `$ZOFO_CACHE/pypi` (see `zofo.models.pypi._older_pip` for why
  an older pip may do it). pip honours its own settings, so `PIP_INDEX_URL` / `PIP_FIND_LINKS` can point it at a
  mirror or a folder.

Only the asked-for `bigbench/benchmark_tasks/<task>/task.json` is extracted from the archive; later loads read
that file directly.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from zofo.errors import ZofoError
from zofo.models.pypi import cache_dir, cached, download

REQUIREMENT = "bigbench==1.0.0"
TASKS_DIR = "bigbench-1.0.0/bigbench/benchmark_tasks"


def check_task_name(task: str) -> None:
    """Refuse a name that is empty or could leave the folder it is looked up in."""
    if not task or ".." in Path(task).parts or task.startswith(("/", "~")) or "\\" in task:
        raise ZofoError(f"bad BIG-bench task name {task!r}", "use e.g. bigbench:strategyqa")


def extracted_path(task: str) -> Path:
    return cache_dir() / "bigbench" / task / "task.json"


def cached_sdist() -> Path | None:
    """The sdist if it is already in the cache (nothing downloaded)."""
    return cached(cache_dir() / "pypi", "bigbench", "1.0.0", source=True)


def download_sdist() -> Path:
    """The sdist, downloaded with `pip download` unless the cache has it."""
    return download(REQUIREMENT, cache_dir() / "pypi", source=True)


def _extract(sdist: Path, task: str, dest: Path) -> bool:
    """Copy one task.json out of the sdist (streamed, nothing else written); False if it is not there."""
    member = f"{TASKS_DIR}/{task}/task.json"
    with tarfile.open(sdist, "r:gz") as archive:
        for info in archive:
            if info.name == member and info.isfile():
                dest.parent.mkdir(parents=True, exist_ok=True)
                partial = dest.with_name(dest.name + ".partial")
                partial.write_bytes(archive.extractfile(info).read())
                partial.replace(dest)
                return True
    return False


def available_tasks(sdist: Path) -> list[str]:
    """Names (with sub-task paths such as `arithmetic/1_digit_addition`) of the tasks in the sdist."""
    with tarfile.open(sdist, "r:gz") as archive:
        return sorted(name[len(TASKS_DIR) + 1: -len("/task.json")] for name in archive.getnames()
                      if name.startswith(TASKS_DIR) and name.endswith("/task.json"))


def task_from_sdist(task: str, sdist: Path) -> Path:
    """`<task>/task.json` extracted from `sdist` into the cache; an unknown task lists the sdist's tasks."""
    dest = extracted_path(task)
    if not _extract(sdist, task, dest):
        names = available_tasks(sdist)
        raise ZofoError(f"BIG-bench ({sdist.name}) has no task {task!r}",
                        f"choose one of: {', '.join(names[:40])}{', ...' if len(names) > 40 else ''}")
    return dest


def fetch_task_json(task: str) -> Path:
    """Path of `<task>/task.json` in the cache: extracted before, from the cached sdist, else downloaded."""
    check_task_name(task)
    if extracted_path(task).is_file():
        return extracted_path(task)
    return task_from_sdist(task, cached_sdist() or download_sdist())
