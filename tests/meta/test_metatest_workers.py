"""`zofo meta-test --workers N`: the units in N processes give the one-process results, a signal stops every worker and
keeps the finished units, and a failed worker is named with its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.meta.test_metatest import FLAGS, SMALL, SRC, zofo
from zofo.errors import ZofoError
from zofo.meta import MetaTestInterrupted, meta_test, resolve
from zofo.meta.units import write_unit
from zofo.meta.workers import Share, count_finished, devices, failure, read_spec, run_workers, write_spec
from zofo.run.lock import locked


def settings(out: Path) -> dict:
    """Per task: every seed's zero-shot, ICL and k-shot LoRA accuracy and the step dev chose."""
    report = json.loads((out / "meta_test.json").read_text())
    return {row["task"]: {s: row[s]["seeds"] for s in ("zero_shot", "icl", "peft")} for row in report["tasks"]}


def test_two_workers_give_what_one_process_gives_and_each_unit_runs_once(tmp_path, tasks, tiny_model_dir):
    args = [str(tasks / "films"), str(tasks / "premises"), "--model", str(tiny_model_dir), "--device", "cpu", *FLAGS]
    one = zofo("meta-test", *args, "--out", str(tmp_path / "one"), cwd=tmp_path)
    two = zofo("meta-test", *args, "--out", str(tmp_path / "two"), "--workers", "2", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert settings(tmp_path / "two") == settings(tmp_path / "one")  # 2 tasks x 2 seeds, every number
    assert two.stdout.splitlines()[1:4] == one.stdout.splitlines()[1:4]  # the table's rows
    claims = sorted(f.name for f in (tmp_path / "two" / "workers" / "claims").iterdir())
    assert claims == ["films__seed0", "films__seed1", "premises__seed0", "premises__seed1"]
    assert sorted(f.name for f in (tmp_path / "two" / "workers").glob("*.log")) == ["0.log", "1.log"]
    again = zofo("meta-test", *args, "--out", str(tmp_path / "two"), "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == two.stdout  # finished units are not run again


def test_a_unit_is_claimed_by_one_process_only(tmp_path, tasks):
    films, premises = resolve(str(tasks), tasks, "argument 1")
    first, second = Share(tmp_path), Share(tmp_path)  # two workers' views of one folder
    assert first.claim(films, 0) and not second.claim(films, 0) and not first.claim(films, 0)
    assert second.claim(films, 1) and second.claim(premises, 0) and not first.claim(premises, 0)


def test_the_spec_gives_the_workers_the_same_tasks_and_protocol(tmp_path, tasks):
    refs = resolve(str(tasks), tasks, "argument 1")
    spec = read_spec(write_spec(tmp_path, refs, "some-model", SMALL, "bfloat16"))
    assert spec["refs"] == refs and spec["protocol"] == SMALL and spec["model"] == "some-model"
    assert spec["dtype"] == "bfloat16" and Path(spec["out"]) == tmp_path


def test_workers_share_a_single_device_as_given():
    assert devices("cpu", 3) == ["cpu", "cpu", "cpu"]
    assert devices("cuda:1", 2) == ["cuda:1", "cuda:1"]


def test_a_failed_worker_is_named_with_its_last_line_and_finished_units_are_kept(tmp_path, tasks):
    refs = resolve(str(tasks / "films"), tasks, "argument 1")
    spec = write_spec(tmp_path, refs, str(tmp_path / "no-such-model"), SMALL, "float32")
    units = [(tmp_path / "units" / "films" / f"seed{s}.json", refs[0]) for s in SMALL.seeds]
    write_unit(units[0][0], {"data": refs[0].data})
    with pytest.raises(ZofoError, match=r"meta-test worker 0 of 1 failed \(exit 1: zofo: error: .*no-such-model") \
            as e, locked(tmp_path) as lock:
        run_workers(spec, 2, "cpu", units, progress=False, lock_fd=lock)  # one unit left: one worker
    assert "1 of 2 task-seed evaluations are kept" in e.value.fix
    assert not (tmp_path / "workers" / "1.log").exists()


def test_a_failure_names_the_killing_signal_or_the_last_zofo_line_among_progress_bars(tmp_path):
    log = tmp_path / "0.log"
    log.write_text("Loading weights: 100%|####| 20/20\nzofo: error: it broke (fix it)\nLoading weights: 50%\n")
    assert "(exit 1: zofo: error: it broke (fix it); its output: " in failure(0, 3, 1, log)
    assert failure(2, 3, -9, log).startswith("meta-test worker 2 of 3 failed (killed by SIGKILL (out of memory?)")
    log.write_text("")
    assert "(exit 1: no output;" in failure(0, 1, 1, log)


def test_a_worker_stops_before_its_next_unit_when_the_parent_asked_every_worker_to(tmp_path, tasks, tiny_model_dir):
    """The parent's stop file: for a worker that missed the signal (it came before its handlers were set)."""
    refs = resolve(str(tasks / "films"), tasks, "argument 1")
    Share(tmp_path / "out").stop_file.write_text(f"{int(signal.SIGINT)}\n")
    with pytest.raises(MetaTestInterrupted, match=r"interrupted by SIGINT after 0 of 2") as e:
        meta_test(refs, str(tiny_model_dir), SMALL, tmp_path / "out", device="cpu", progress=False, as_worker=True)
    assert e.value.exit_code == 130 and not list((tmp_path / "out").glob("units/*/*.json"))


def test_a_second_meta_test_on_a_busy_folder_is_refused(tmp_path):
    with locked(tmp_path):
        with pytest.raises(ZofoError, match=r"another meta-test is running on .* \(wait for it to end, or give"):
            with locked(tmp_path):
                pass
    with locked(tmp_path):  # free again
        pass


def test_sigterm_stops_every_worker_keeps_finished_units_and_the_same_command_continues(tmp_path, tasks,
                                                                                      tiny_model_dir):
    out = tmp_path / "out"
    # units long enough (40 k-shot steps) that the signal, sent once the first is written, finds others running:
    # with FLAGS' 2 steps the two workers once finished all six within the poll (exit 0)
    command = [sys.executable, "-m", "zofo.cli", "meta-test", str(tasks / "films"), str(tasks / "premises"),
               "--model", str(tiny_model_dir), "--device", "cpu", *FLAGS, "--seeds", "0", "1", "2",
               "--steps", "40", "--eval-every", "20", "--workers", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    parent = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("units/*/*.json")) and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.05)
    parent.send_signal(signal.SIGTERM)
    _, stderr = parent.communicate(timeout=300)
    kept = sorted(out.glob("units/*/*.json"))
    assert parent.returncode == 143, stderr
    assert 1 <= len(kept) < 6 and f"after {len(kept)} of 6 task-seed evaluations" in stderr
    logs = [(out / "workers" / f"{w}.log").read_text() for w in range(2)]
    assert any("interrupted by SIGTERM" in text for text in logs), logs  # passed on to the workers
    before = {f: f.read_text() for f in kept}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert all(f.read_text() == text for f, text in before.items())  # kept, not redone
    assert len(list(out.glob("units/*/*.json"))) == 6 and not list(out.glob("units/*/*.partial"))


def workers_of(spec: Path) -> list[int]:
    """The pids of the processes whose command line names `spec`: the workers of that meta-test."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(spec).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # ended meanwhile
            pass
    return pids


def test_workers_stop_when_their_parent_is_killed(tmp_path, tasks, tiny_model_dir):
    """SIGKILL (or a closed terminal) ends the parent without passing anything on: the workers see their pipe
    close and stop as on SIGTERM, instead of running on unwatched beside the next command."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "zofo.cli", "meta-test", str(tasks / "films"), str(tasks / "premises"),
               "--model", str(tiny_model_dir), "--device", "cpu", *FLAGS, "--seeds", "0", "1", "2",
               "--workers", "2", "--out", str(out)]
    parent = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(SRC)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob("units/*/*.json")) and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
    spec = out / "workers" / "spec.json"
    assert workers_of(spec)  # running when the parent goes
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 300  # each finishes its current step first, on a CPU others may be loading
    while workers_of(spec) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not workers_of(spec), "workers still running 300 s after their parent was killed"
    assert len(list(out.glob("units/*/*.json"))) < 6  # they stopped, with units left
    logs = [(out / "workers" / f"{w}.log").read_text() for w in range(2)]
    assert any("interrupted by SIGTERM" in text for text in logs), logs  # the one that finished a unit, at least


def test_a_unit_made_from_other_task_data_is_not_counted_finished(tmp_path, tasks):
    films = resolve(str(tasks / "films"), tasks, "argument 1")[0]
    same, other = tmp_path / "same.json", tmp_path / "other.json"
    write_unit(same, {"data": films.data})
    write_unit(other, {"data": "somewhere/else"})  # the same task name, made from other data: to be done again
    assert count_finished([(same, films), (other, films), (tmp_path / "missing.json", films)]) == 1


def test_the_stop_file_is_read_whole_and_a_unit_file_is_readable_as_before(tmp_path):
    share = Share(tmp_path)
    assert share.stop_signal() is None
    share.ask_to_stop(int(signal.SIGINT))
    assert share.stop_signal() == signal.SIGINT and not list(share.stop_file.parent.glob("*.partial"))
    share.stop_file.write_text("")  # cut short by someone else: still a stop
    assert share.stop_signal() == signal.SIGTERM
    old = os.umask(0o022)
    try:
        write_unit(tmp_path / "unit.json", {"data": None})
    finally:
        os.umask(old)
    assert (tmp_path / "unit.json").stat().st_mode & 0o777 == 0o644  # as write_text made it


def test_a_worker_killed_by_a_signal_the_enum_does_not_name_is_still_reported(tmp_path):
    (tmp_path / "0.log").write_text("")
    assert "(killed by signal 40; its output: " in failure(0, 1, -40, tmp_path / "0.log")


def test_workers_0_is_refused_with_exit_2_before_anything_runs(tmp_path, tasks, tiny_model_dir):
    bad = zofo("meta-test", str(tasks / "films"), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"),
               *FLAGS, "--workers", "0", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == ("zofo: error: meta-test --workers must be >= 1, got 0 "
                                                   "(give --workers 1 or more)")
    assert not (tmp_path / "out").exists()
