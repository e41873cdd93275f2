"""Where `bigbench:NAME` is read from. The places, in the order tried (the first that has the task wins):

1. `data` (`--data`), when given: the task's folder, its task.json, a collection root (NAME below it, e.g.
   `../shared/data/bigbench`) or a BIG-bench checkout (NAME below `bigbench/benchmark_tasks`). A folder the user
   names is the only place looked in: a task missing there is an error, never read from somewhere else.
2. `$ZOFO_BIGBENCH`: a BIG-bench checkout or collection root.
3. the project's data folder: `$ZOFO_SHARED_DATA/bigbench` (the variable the tests use for `../shared/data`),
   else `../shared/data/bigbench` beside the source checkout zofo runs from (82 tasks there).
4. zofo's cache (`$ZOFO_CACHE`, else ~/.cache/zofo): a task extracted earlier, or the `bigbench-1.0.0.tar.gz`
   sdist already in its `pypi/` folder.
5. the package index: `pip download bigbench==1.0.0` (zofo.tasks.bigbench_pypi).

When every place fails, one error lists them all with what was missing and how to provide the task.
A task is named by its path below the collection root: `arithmetic/1_digit_addition`, `fact_checker/fever`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import zofo.tasks.bigbench_pypi as bigbench_pypi
from zofo.errors import ZofoError
from zofo.tasks.io import find_file

CHECKOUT_TASKS = Path("bigbench") / "benchmark_tasks"


def has_task(folder: Path) -> Path | None:
    """The task.json (or task.json.gz) directly in `folder`, if any."""
    return find_file(folder, "task", (".json",)) if folder.is_dir() else None


def collection_roots(folder: Path) -> list[Path]:
    """The folders below which a collection or checkout at `folder` keeps its tasks."""
    return [folder, folder / CHECKOUT_TASKS]


def shared_bigbench() -> Path | None:
    """The project's BIG-bench folder: $ZOFO_SHARED_DATA/bigbench, else ../shared/data/bigbench beside the checkout."""
    if os.environ.get("ZOFO_SHARED_DATA"):
        return Path(os.environ["ZOFO_SHARED_DATA"]).expanduser() / "bigbench"
    package = Path(__file__).resolve().parents[1]
    if package.parent.name != "src":  # an installed copy, not a source checkout: nothing beside it
        return None
    return package.parents[2] / "shared" / "data" / "bigbench"


def known_roots() -> list[Path]:
    """Collection roots zofo knows of without being told: $ZOFO_BIGBENCH, the project's data, the cache."""
    roots = []
    if os.environ.get("ZOFO_BIGBENCH"):
        roots += collection_roots(Path(os.environ["ZOFO_BIGBENCH"]).expanduser())
    shared = shared_bigbench()
    return roots + ([shared] if shared else []) + [bigbench_pypi.cache_dir() / "bigbench"]


def _ends_with(folder: Path, parts: tuple[str, ...]) -> bool:
    return not parts or folder.resolve().parts[-len(parts):] == parts


def in_given(data: Path, name: str) -> tuple[Path | None, str]:
    """(task.json, "") from the folder or file the user named, else (None, the paths looked at).

    A folder may be a collection root or checkout (NAME below it), the task's own folder, or, for a nested
    NAME such as `fact_checker/fever`, the group folder (`fact_checker`).
    """
    parts = Path(name).parts
    if data.is_file():
        if _ends_with(data.parent, parts):
            return data, ""
        return None, f"{data} (the task.json of {data.parent.name!r}, not of {name!r})"
    if not data.exists():
        return None, f"{data} (does not exist)"
    candidates = [root / name for root in collection_roots(data)]
    candidates += [data.joinpath(*parts[k:]) for k in range(1, len(parts) + 1) if _ends_with(data, parts[:k])]
    for folder in candidates:
        if has_task(folder):
            return has_task(folder), ""
    return None, " and ".join(str(c) for c in candidates) + " (no task.json)"


def in_local_roots(name: str) -> tuple[Path | None, list[str]]:
    """(task.json, []) from $ZOFO_BIGBENCH or the project's data folder, else (None, what was tried)."""
    tried = []
    if os.environ.get("ZOFO_BIGBENCH"):
        checkout = Path(os.environ["ZOFO_BIGBENCH"]).expanduser()
        for root in collection_roots(checkout):
            found = has_task(root / name)
            if found:
                return found, []
        tried.append(f"$ZOFO_BIGBENCH: {checkout}/[{CHECKOUT_TASKS}/]{name} (no task.json)")
    else:
        tried.append("$ZOFO_BIGBENCH (not set)")
    shared = shared_bigbench()
    if shared is not None and has_task(shared / name):
        return has_task(shared / name), []
    tried.append(f"project data: {shared / name} (no task.json)" if shared else
                 "project data (zofo is not run from a source checkout; set ZOFO_SHARED_DATA)")
    return None, tried


def in_cache_or_index(name: str) -> tuple[Path | None, list[str]]:
    """(task.json, []) from the cache or, failing that, the package index; else (None, what was tried)."""
    if bigbench_pypi.extracted_path(name).is_file():
        return bigbench_pypi.extracted_path(name), []
    sdist = bigbench_pypi.cached_sdist()
    if sdist is not None:
        return bigbench_pypi.task_from_sdist(name, sdist), []
    tried = [f"cache: {bigbench_pypi.extracted_path(name)} and {bigbench_pypi.cache_dir() / 'pypi'}"
             f"/bigbench-1.0.0.tar.gz (neither there)"]
    try:
        sdist = bigbench_pypi.download_sdist()
    except ZofoError as err:
        return None, [*tried, f"package index: {err.what}"]
    return bigbench_pypi.task_from_sdist(name, sdist), []


def locate(name: str, data: Path | None = None) -> Path:
    """The task.json of `bigbench:<name>`, from the first place (module docstring) that has it."""
    bigbench_pypi.check_task_name(name)
    if data is not None:
        found, tried = in_given(data, name)
        if found is None:
            raise ZofoError(f"BIG-bench task {name!r} not found in --data {tried}",
                            "give the task's folder, its task.json or the collection root that holds it")
        return found
    found, tried = in_local_roots(name)
    if found is None:
        found, more = in_cache_or_index(name)
        tried += more
    if found is None:
        raise ZofoError(f"BIG-bench task {name!r} not found; tried {'; '.join(tried)}{_known_here(name)}",
                        "give --data <its folder or a BIG-bench collection>, set ZOFO_BIGBENCH=<a BIG-bench "
                        "checkout>, or put bigbench-1.0.0.tar.gz in the cache's pypi/ folder")
    return found


def _known_here(name: str) -> str:
    """A hint from the task names the local places do hold: the closest ones, else the first 20."""
    names = sorted({p.parent.relative_to(root).as_posix() for root in known_roots() if root.is_dir()
                    for pattern in ("*/task.json*", "*/*/task.json*") for p in root.glob(pattern)})
    if not names:
        return ""
    close = difflib.get_close_matches(name, names, n=3)
    if close:
        return f"; did you mean {' or '.join(close)}?"
    return f"; {len(names)} tasks found locally: {', '.join(names[:20])}{', ...' if len(names) > 20 else ''}"


def task_name(given: Path, file: Path) -> str:
    """The path name of the task whose task.json is `file`, found from `given` (`--task bigbench --data`).

    Below a known collection root it is the path from that root (`arithmetic/1_digit_addition`); a task found in
    a sub-folder of the folder given is `<given>/<sub-folder>`; otherwise the task's folder name.
    """
    folder = file.parent.resolve()
    for root in sorted(known_roots(), key=lambda r: -len(r.resolve().parts)):  # the innermost root that holds it
        if root.is_dir() and folder.is_relative_to(root.resolve()) and folder != root.resolve():
            return folder.relative_to(root.resolve()).as_posix()
    if given.is_dir() and folder.parent == given.resolve():
        return f"{given.resolve().name}/{folder.name}"
    return folder.name
