"""The folder a run writes into, checked before anything loads: a run never mixes its files with another's.

A new run needs a folder that is absent or empty. A folder that holds a zofo run (its `config.yaml`) is refused
with what to do: continue it (`--resume RUN/checkpoint`), replace it (`--overwrite`) or pick another name; writing
into it would overwrite `best/` and `checkpoint/`, append to `log.jsonl` and add a second TensorBoard file. A
non-empty folder that is not a zofo run is refused even with `--overwrite`, and so is a run's folder that holds
files a run does not write (`RUN_ENTRIES`): zofo deletes only what it wrote. `--overwrite` deletes the old run's
files only once the new run holds the folder's lock and has loaded its data and model, so a second run on the
folder, or a typo in the new run's inputs, leaves the old run whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from zofo.atomic import encloses_current_folder, restored
from zofo.config import CORE_SECTIONS
from zofo.errors import ZofoError

#: files written into a run folder before the run starts (experiments/launch.py's placement.json, where the run was
#: placed; the run's own lock, `zofo.run.lock`); they belong to the run to come, so their folder counts as empty
LAUNCHER_FILES = frozenset({"placement.json", ".lock"})

#: everything a run writes into its folder (with `zofo plot`'s default curves.png, and the FOLDER.partial and
#: FOLDER.old of `zofo.atomic.written_whole`): what `--overwrite` deletes, and all it deletes
RUN_ENTRIES = LAUNCHER_FILES | {"config.yaml", "log.jsonl", "result.json", "tensorboard", "curves.png"} | {
    name + suffix for name in ("best", "final", "checkpoint") for suffix in ("", ".partial", ".old")}


def check_run_folder(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse ``run_dir`` for a new run unless it is absent, empty (but for `LAUNCHER_FILES`), or, with
    ``overwrite``, a zofo run's folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ZofoError(f"run folder {run_dir} is a file", "choose another --output-dir", "train.output_dir")
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if not set(entries) - LAUNCHER_FILES:
        return
    if not is_run_folder(run_dir):
        raise ZofoError(f"run folder {run_dir} is not empty and holds no zofo run ({listed(entries)})",
                        "choose a new --output-dir; zofo writes only into an empty folder and deletes only "
                        "folders it wrote", "train.output_dir")
    if not overwrite:
        raise ZofoError(f"run folder {run_dir} already holds {describe_run(run_dir)}", _advice(run_dir),
                        "train.output_dir")
    if encloses_current_folder(run_dir):  # removing it would pull the current folder away mid-run
        raise ZofoError(f"--overwrite of {run_dir}, the current folder or one above it", "run from another folder, "
                        "or give the run folder's path from there", "train.output_dir")
    foreign = [name for name in entries if name not in RUN_ENTRIES]
    if foreign:
        raise ZofoError(f"--overwrite of {run_dir}: it also holds files a zofo run does not write ({listed(foreign)})",
                        "move them out of the folder, or choose a new --output-dir; --overwrite deletes only what "
                        "a run wrote", "train.output_dir")


def listed(names: list[str]) -> str:
    """A folder's entries as a refusal names them: the first five, then "..."."""
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def clear_run_folder(run_dir: Path) -> None:
    """Delete what an old run wrote into ``run_dir`` (`--overwrite`; `RUN_ENTRIES`, but for the lock the new run
    holds and the launcher's placement), so that the new run starts in an empty folder. Anything else stays."""
    if not (run_dir.is_dir() and is_run_folder(run_dir)):
        return
    for entry in sorted(run_dir.iterdir()):
        if entry.name not in RUN_ENTRIES - LAUNCHER_FILES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def is_run_folder(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a zofo run: a config.yaml whose top level is sections (mappings), among them every
    section each run has (`zofo.config.CORE_SECTIONS`; the others depend on the registered methods)."""
    config = run_dir / "config.yaml"
    try:
        sections = yaml.safe_load(config.read_text()) if config.is_file() else None
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    return (isinstance(sections, dict) and set(CORE_SECTIONS) <= set(sections)
            and all(isinstance(values, dict) for values in sections.values()))


def describe_run(run_dir: Path) -> str:
    """A finished run, or an unfinished one and where it stopped, in a few words."""
    if (run_dir / "result.json").exists():
        return "a finished run (result.json)"
    step = checkpoint_step(run_dir / "checkpoint")
    if step is not None:
        return f"an unfinished run (its checkpoint is at step {step})"
    return "an unfinished run without a checkpoint"


def _advice(run_dir: Path) -> str:
    fresh = "pass --overwrite to delete it and start afresh, or choose a new --output-dir"
    if (run_dir / "result.json").exists() or checkpoint_step(run_dir / "checkpoint") is None:
        return fresh
    return f"continue it with `zofo train --resume {run_dir / 'checkpoint'}`, {fresh}"


def checkpoint_step(checkpoint: Path) -> int | None:
    """The step a checkpoint folder was saved at (its loop.json), or None where there is none to read."""
    restored(checkpoint)
    try:
        return int(json.loads((checkpoint / "loop.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_goes_on(checkpoint: Path, steps: int, where: str, flag: str, again: str, key: str | None = None) -> None:
    """A resumed run only goes on: ``steps`` below its checkpoint's step, or at it once the run has its result.json,
    would train nothing. ``where`` and ``flag`` name the run and its step count in the refusal; ``again``: what such a
    resume would only do again (`zofo train` tests, meta-train evaluates)."""
    step = checkpoint_step(checkpoint)
    if step is None:
        return
    if steps < step:
        raise ZofoError(f"{where}: {flag} {steps} is below the checkpoint's step {step}",
                        f"give --steps {step} or more (a resumed run only goes on)", key)
    if steps == step and (checkpoint.parent / "result.json").exists():
        raise ZofoError(f"{where}: the run finished at step {step}, with its result.json; resuming it would train "
                        f"nothing and only {again} again", f"give --steps above {step} to train it on", key)
