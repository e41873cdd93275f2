"""A new run writes only into an absent or empty folder; a folder that holds a run is refused with what to do."""

from __future__ import annotations

import json

import pytest

from zofo.errors import ZofoError
from zofo.run.folder import check_run_folder, clear_run_folder

FRESH = r"pass --overwrite to delete it and start afresh, or choose a new --output-dir\)$"


def a_run(folder, finished: bool = False, step: int | None = None):
    """A folder as zofo train leaves it: config.yaml, a log, and a checkpoint at ``step`` or a result."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model:\n  name: x\ndata:\n  task: sst2\npeft:\n  r: 8\noptim:\n  lr: 1.0e-6\n"
                                        "zo:\n  eps: 0.001\ntrain:\n  method: mezo\n")
    (folder / "log.jsonl").write_text("{}\n")
    if step is not None:
        (folder / "checkpoint").mkdir()
        (folder / "checkpoint" / "loop.json").write_text(json.dumps({"step": step}))
    if finished:
        (folder / "result.json").write_text("{}")
    return folder


def test_an_absent_or_empty_folder_or_one_a_launcher_prepared_is_fine(tmp_path):
    check_run_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty")
    (tmp_path / "placed").mkdir()
    (tmp_path / "placed" / "placement.json").write_text("{}")  # benchmarks/study.py writes it before the run
    check_run_folder(tmp_path / "placed")


def test_a_finished_run_is_refused_unless_overwritten(tmp_path):
    run = a_run(tmp_path / "run", finished=True, step=4)
    with pytest.raises(ZofoError, match=rf"^run folder {run} already holds a finished run \(result.json\) \({FRESH}"):
        check_run_folder(run)
    check_run_folder(run, overwrite=True)
    (run / ".lock").write_text("")  # the new run's, held while it clears the old one
    (run / "best.partial").mkdir()  # a save the old run did not finish
    clear_run_folder(run)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_overwrite_deletes_only_what_a_run_writes(tmp_path):
    run = a_run(tmp_path / "run", finished=True)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ZofoError, match=r"--overwrite of .*run: it also holds files a zofo run does not write "
                                        r"\(notes.txt\) \(move them out"):
        check_run_folder(run, overwrite=True)
    clear_run_folder(run)  # had it been called: the user's file stays
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_an_unfinished_run_is_refused_with_how_to_continue_it(tmp_path):
    run = a_run(tmp_path / "run", step=3)
    with pytest.raises(ZofoError, match=rf"^run folder {run} already holds an unfinished run \(its checkpoint is at "
                                        rf"step 3\) \(continue it with `zofo train --resume {run / 'checkpoint'}`, "
                                        rf"{FRESH}"):
        check_run_folder(run)
    bare = a_run(tmp_path / "bare")
    with pytest.raises(ZofoError, match=rf"holds an unfinished run without a checkpoint \({FRESH}"):
        check_run_folder(bare)


def test_a_folder_of_something_else_is_never_written_into_nor_deleted(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("paper: draft\n")  # a config.yaml, but not a run's
    with pytest.raises(ZofoError, match=r"is not empty and holds no zofo run \(config.yaml\) \(choose a new "
                                        r"--output-dir; zofo writes only into an empty folder and deletes only"):
        check_run_folder(tmp_path / "mine", overwrite=True)
    clear_run_folder(tmp_path / "mine")
    assert (tmp_path / "mine" / "config.yaml").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ZofoError, match=r"run folder .*file is a file \(choose another --output-dir\)"):
        check_run_folder(tmp_path / "file")


def test_overwriting_the_current_folder_or_one_above_it_is_refused(tmp_path, monkeypatch):
    """shutil.rmtree of the current folder deleted the old run, then failed with a raw OSError."""
    run = a_run(tmp_path / "run", finished=True)
    (run / "best").mkdir()
    for here in (run, run / "best"):
        monkeypatch.chdir(here)
        with pytest.raises(ZofoError, match=r"--overwrite of .*, the current folder or one above it"):
            check_run_folder(run, overwrite=True)
    assert (run / "result.json").exists()
    monkeypatch.chdir(tmp_path)
    check_run_folder(run, overwrite=True)  # from elsewhere: allowed
