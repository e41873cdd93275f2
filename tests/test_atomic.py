"""Saved folders: whole or not at all, and their weights readable as the umask allows."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from zofo.atomic import restored, written_whole
from zofo.run.checkpoint import save_weights


def test_a_folder_written_whole_replaces_the_old_one_only_when_complete(tmp_path):
    folder = tmp_path / "final"
    with written_whole(folder) as partial:
        (partial / "a").write_text("1")
    with pytest.raises(RuntimeError), written_whole(folder) as partial:
        (partial / "a").write_text("2")
        raise RuntimeError("killed")
    assert (folder / "a").read_text() == "1"  # the old folder stands; the half-written one is beside it
    assert (tmp_path / "final.partial" / "a").read_text() == "2"
    with written_whole(folder) as partial:
        (partial / "b").write_text("3")
    assert [p.name for p in folder.iterdir()] == ["b"] and not (tmp_path / "final.partial").exists()
    folder.replace(tmp_path / "final.old")  # as a write killed between its two renames leaves it
    assert restored(folder) == folder and (folder / "b").read_text() == "3"  # what a reader does first
    folder.replace(tmp_path / "final.old")
    with written_whole(folder) as partial:
        assert (folder / "b").read_text() == "3"  # the old folder is back before anything is written
        (partial / "c").write_text("4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"] and [p.name for p in folder.iterdir()] == ["c"]


@pytest.fixture
def umask_027():
    before = os.umask(0o027)
    yield
    os.umask(before)


def test_saved_weights_get_the_mode_the_umask_gives_every_other_file(tmp_path, umask_027):
    """safetensors writes 0600 whatever the umask; the config beside the weights gets 0640 under umask 027."""
    with written_whole(tmp_path / "final") as partial:
        save_file({"w": torch.ones(2)}, str(partial / "model.safetensors"))  # as save_pretrained does
        (partial / "config.json").write_text("{}")
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "final").iterdir()}
    assert modes == {"model.safetensors": 0o640, "config.json": 0o640}
    save_weights({"w": torch.nn.Parameter(torch.ones(2))}, tmp_path / "replayed.safetensors")  # outside such a folder
    assert (tmp_path / "replayed.safetensors").stat().st_mode & 0o777 == 0o640
