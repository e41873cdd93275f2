"""Every command run as a process, as a user or a script runs it: exit status 0 when it is done, with nothing but
progress on stderr; 2 for a usage error, 1 for an error while running, each in one line; 130 on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny import build_tiny_tokenizer, small_gguf, tiny_model

SRC = Path(__file__).resolve().parents[2] / "src"
#: a tqdm bar, as it reaches a pipe: "desc:  40%|####      | 2/5 [00:01<00:01, 1.9it/s]"
PROGRESS = re.compile(r"^[\w ]+: +\d+%\|.*\|")
HELD = "held"
#: a process that runs `zofo.cli.main` with ``target`` (module.function) replaced by a wait that prints HELD first:
#: a command caught at a known point inside it, for the commands that are over too soon to be interrupted otherwise
HOLD = f"""
import importlib, sys, time
module, name = sys.argv[1].rsplit(".", 1)
def hold(*args, **kwargs):
    print("{HELD}", flush=True)
    time.sleep(600)
setattr(importlib.import_module(module), name, hold)
from zofo.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def zofo(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zofo.cli", *map(str, args)], capture_output=True, text=True,
                          env=environment(), timeout=timeout)


def not_progress(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not progress bars (tqdm redraws a bar after a carriage return)."""
    return [line for line in re.split(r"[\r\n]", stderr) if line.strip() and not PROGRESS.match(line)]


def error_line(done: subprocess.CompletedProcess) -> str:
    lines = not_progress(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("zofo: error: "), done.stderr
    return lines[0]


def interrupted_when(command: list[str], marker: str, stream: str = "stderr", timeout: float = 300,
                     asked_first: int | None = None):
    """Start ``command``; once ``marker`` appears on ``stream``, send SIGINT; return (exit status, stdout, stderr).
    ``asked_first``: a signal sent before, which the process must answer and go on after (checked 2 s later)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment())
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    seen, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while marker.encode() not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
            if selector.select(timeout=1):
                seen += os.read(pipe.fileno(), 65536)
    if asked_first is not None:
        proc.send_signal(asked_first)
        time.sleep(2)
        assert proc.poll() is None, f"the process ended on {signal.Signals(asked_first).name}"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    if stream == "stderr":
        err = seen + err
    else:
        out = seen + out
    return proc.returncode, out.decode(), err.decode()


def held_and_interrupted(target: str, *args) -> tuple[int, str]:
    """``zofo ARGS`` held at ``target``, then Ctrl-C: (exit status, stderr)."""
    code, _, err = interrupted_when([sys.executable, "-c", HOLD, target, *map(str, args)], HELD, stream="stdout")
    return code, err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = build_tiny_tokenizer()
    tiny_model("llama", vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_args(model_dir: Path, shared_data: Path, out: Path, *extra) -> list[str]:
    settings = ["data.n_train=16", "data.n_dev=8", "data.n_test=8", "data.max_length=48", "train.batch_size=4",
                "train.progress=false", "optim.lr=1e-3"]
    return ["train", "--method", "mezo", "--model", model_dir, "--task", "sst2", "--data", shared_data / "sst2",
            "--steps", "2", "--output-dir", out, *[a for s in settings for a in ("--set", s)], *extra]


@pytest.fixture(scope="module")
def finished_run(model_dir, shared_data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished mezo run of two steps (its folder, and how `zofo train` ended)."""
    run = tmp_path_factory.mktemp("runs") / "mezo"
    return run, zofo(*train_args(model_dir, shared_data, run))


def dev_steps(run: Path) -> list[int]:
    """The steps of the dev evaluations in the run's log (none before it has one)."""
    log = run / "log.jsonl"
    records = map(json.loads, log.read_text().splitlines()) if log.exists() else []
    return [r["step"] for r in records if r["phase"] == "dev"]


@pytest.fixture(scope="module")
def truncated_gguf(tmp_path_factory) -> tuple[Path, int]:
    """(a GGUF file cut after 4000 bytes, the size of the whole file)."""
    whole = small_gguf(tmp_path_factory.mktemp("gguf") / "whole.gguf")
    cut = whole.with_name("cut.gguf")
    cut.write_bytes(whole.read_bytes()[:4000])
    return cut, whole.stat().st_size


def says_truncated(done: subprocess.CompletedProcess, cut: Path, size: int) -> bool:
    """Whether the process failed with the one line that a GGUF file cut at 4000 of ``size`` bytes gets."""
    found = re.fullmatch(rf"zofo: error: GGUF file {re.escape(str(cut))} is truncated: 4,000 bytes, its header "
                         r"describes ([\d,]+) \(download it again, or re-assemble it if it came in parts: "
                         r"cat model.gguf.part\* > model.gguf\)", error_line(done))
    return done.returncode == 1 and found is not None and 4000 < int(found.group(1).replace(",", "")) <= size


# --- train ---------------------------------------------------------------------------------------------------------

def test_train_exits_0_with_only_progress_on_stderr(finished_run):
    run, done = finished_run
    assert done.returncode == 0, done.stderr
    assert not_progress(done.stderr) == []
    assert done.stdout.splitlines()[-1] == f"run folder: {run}" and (run / "result.json").exists()


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-1"], "zofo: error: optim.lr must be >= 0, got -1.0 (0 leaves those weights unchanged"),
    (["--set", "optim.lr_upper=-1e-4"], "optim.lr_upper must be >= 0, got -0.0001"),
    (["--eps", "-0.001"], "zo.eps must be > 0, got -0.001"),
    (["--eps", "-1e-3"], "zo.eps must be > 0, got -0.001"),  # argparse took it for a flag: "expected one argument"
    (["--steps", "0"], "train.steps is 0: method mezo would train for no step (give --steps N >= 1; to only "
                       "evaluate, use --method zero-shot (or icl), or `zofo eval`)"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    # these once failed after the model and data loaded (one with a raw traceback), leaving config.yaml behind
    (["--schedule", "foo"], "unknown optim.schedule 'foo' (use one of: constant, linear, cosine)"),
    (["--n-dev", "0"], "data.n_dev is 0: method mezo chooses its checkpoint on dev (give --n-dev N >= 1)"),
    (["--n-train", "0"], "data.n_train is 0: method mezo trains on the training split (give --n-train N >= 1)"),
    (["--method", "icl", "--shots", "4", "--n-train", "0"],
     "data.n_train is 0: method icl draws its 4 demonstrations from the training split"),
    # it drew 16 and recorded shots 16 in result.json, 100 in config.yaml
    (["--method", "icl", "--shots", "100", "--n-train", "16"],
     "icl.shots 100 with data.n_train 16: the demonstrations are drawn from the train split (give --n-train 100 or "
     "more, or --shots 16 or fewer)"),
    (["--lr", "inf"], "config optim.lr='inf' is not a finite number (give optim.lr a finite value)"),
])
def test_train_refuses_bad_options_before_loading_with_exit_2(tmp_path, flags, message):
    done = zofo("train", "--method", "mezo", "--model", tmp_path / "absent", "--output-dir", tmp_path / "run", *flags)
    assert done.returncode == 2 and message in done.stderr.splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_a_bad_value_in_a_config_file_names_its_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  method: mezo\nzo:\n  eps: 1.0e-3\noptim:\n  lr: -1.0e-6\n")
    done = zofo("train", "--config", config)
    assert done.returncode == 2
    assert error_line(done) == (f"zofo: error: {config}:6: optim.lr must be >= 0, got -1e-06 (0 leaves those "
                                "weights unchanged; the paper uses 1e-6 to 1e-2)")


def test_a_renamed_key_is_one_warning_line_and_the_run_goes_on(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text("train:\n  method: mezo\noptim:\n  eps: 1.0e-3\n")
    done = zofo("config", "--config", config)
    assert done.returncode == 0 and "eps: 0.001" in done.stdout
    assert done.stderr.splitlines() == ["zofo: warning: config key optim.eps is now zo.eps; reading it as zo.eps"]


def test_train_on_a_truncated_gguf_exits_1_in_one_line(truncated_gguf, shared_data, tmp_path):
    cut, size = truncated_gguf
    done = zofo("train", "--method", "mezo", "--model", cut, "--task", "sst2", "--data", shared_data / "sst2",
                "--set", "data.n_train=16", "--set", "data.n_dev=8", "--set", "data.n_test=8", "--steps", "1",
                "--output-dir", tmp_path / "run")
    assert says_truncated(done, cut, size), done.stderr


def test_a_finished_run_is_refused_then_overwritten_on_request(finished_run, model_dir, shared_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    before = (run / "log.jsonl").read_text()
    again = zofo(*train_args(model_dir, shared_data, run))
    assert again.returncode == 2 and error_line(again) == (
        f"zofo: error: run folder {run} already holds a finished run (result.json) (pass --overwrite to delete it "
        "and start afresh, or choose a new --output-dir)")
    assert (run / "log.jsonl").read_text() == before  # untouched
    (run / "curves.png").write_text("drawn from the old run")  # `zofo plot`'s, so the run's own
    fresh = zofo(*train_args(model_dir, shared_data, run), "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert not (run / "curves.png").exists() and len(list((run / "tensorboard").iterdir())) == 1
    assert dev_steps(run) == [0, 2]  # one run's records, not two runs' in one file


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(finished_run, model_dir, shared_data, tmp_path):
    """--overwrite deleted the old run first, then failed on the new run's missing data: one typo lost a run."""
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    files = lambda: sorted(p.relative_to(run) for p in run.rglob("*") if p.name != ".lock")  # noqa: E731
    before = files()
    args = train_args(model_dir, shared_data, run, "--overwrite")
    for wrong, given in (("--data", tmp_path / "nope"), ("--model", tmp_path / "no-model")):
        done = zofo(*[given if a == args[args.index(wrong) + 1] else a for a in args])
        assert done.returncode == 1 and str(given) in error_line(done)  # a missing file: met while running
        assert files() == before


def test_overwrite_refuses_a_folder_another_run_holds(finished_run, model_dir, shared_data, tmp_path):
    """--overwrite ignored the lock: it deleted a running run's folder and both wrote one log."""
    import fcntl

    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running `zofo train` holds
        done = zofo(*train_args(model_dir, shared_data, run), "--overwrite")
    assert done.returncode == 1 and error_line(done).startswith(f"zofo: error: another zofo train is running on {run}")
    assert (run / "result.json").exists() and (run / "best").is_dir()


def test_overwrite_refuses_a_run_folder_holding_the_users_files(finished_run, model_dir, shared_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    (run / "notes.txt").write_text("mine")
    (run / "analysis").mkdir()
    done = zofo(*train_args(model_dir, shared_data, run), "--overwrite")
    assert done.returncode == 2 and error_line(done) == (
        f"zofo: error: --overwrite of {run}: it also holds files a zofo run does not write (analysis, notes.txt) "
        "(move them out of the folder, or choose a new --output-dir; --overwrite deletes only what a run wrote)")
    assert (run / "notes.txt").read_text() == "mine" and (run / "result.json").exists()


def test_a_folder_that_is_not_a_run_is_refused_even_with_overwrite(model_dir, shared_data, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    done = zofo(*train_args(model_dir, shared_data, folder), "--overwrite")
    assert done.returncode == 2 and error_line(done) == (
        f"zofo: error: run folder {folder} is not empty and holds no zofo run (notes.txt) (choose a new "
        "--output-dir; zofo writes only into an empty folder and deletes only folders it wrote)")
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_run_continues_with_resume_into_its_own_folder(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    same = zofo("train", "--resume", run / "checkpoint")  # it tested again and rewrote result.json, exit 0
    assert same.returncode == 2 and error_line(same) == (
        f"zofo: error: train.resume {run / 'checkpoint'}: the run finished at step 2, with its result.json; resuming "
        "it would train nothing and only test again (give --steps above 2 to train it on)")
    done = zofo("train", "--resume", run / "checkpoint", "--steps", "3")
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "result.json").read_text())["steps"] == 3


def test_ctrl_c_during_training_says_so_at_once_and_exits_130_with_a_checkpoint(model_dir, shared_data, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "zofo.cli", *map(str, train_args(model_dir, shared_data, run)),
               "--steps", "100000", "--eval-every", "0", "--set", "train.progress=true"]
    code, _, err = interrupted_when(command, "train:")
    assert code == 130, err
    step = json.loads((run / "checkpoint" / "loop.json").read_text())["step"]
    said = err.index("zofo: SIGINT received: stopping after the current step or evaluation batch, with a "
                     "checkpoint (Ctrl-C again stops at once, without it)")  # when the signal came, before the end
    assert err.index(f"zofo: interrupted by SIGINT after step {step}; the checkpoint {run / 'checkpoint'}") > said
    assert 0 < step < 100000 and not (run / "result.json").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_sigusr1_writes_every_threads_stack_and_training_goes_on(model_dir, shared_data, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "zofo.cli", *map(str, train_args(model_dir, shared_data, run)),
               "--steps", "100000", "--eval-every", "0", "--set", "train.progress=true"]
    code, _, err = interrupted_when(command, "train:", asked_first=signal.SIGUSR1)
    assert code == 130, err  # it trained on after the dump, and the Ctrl-C stopped it as usual, with a checkpoint
    dump = err.index("Current thread 0x")
    assert re.search(r"line \d+ in train_loop\n", err[dump:]) and err.index("zofo: SIGINT received") > dump, err
    assert json.loads((run / "checkpoint" / "loop.json").read_text())["step"] > 0


def test_ctrl_c_during_an_evaluation_stops_it_and_the_resumed_run_evaluates_again(model_dir, shared_data,
                                                                                   tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "zofo.cli", *map(str, train_args(model_dir, shared_data, run)),
               "--n-dev", "300", "--set", "train.eval_batch_size=1", "--set", "train.progress=true"]
    code, _, err = interrupted_when(command, "scoring:")  # the evaluation before the first step
    assert code == 130, err
    loop = json.loads((run / "checkpoint" / "loop.json").read_text())
    assert (loop["step"], loop["eval_pending"]) == (0, True)
    assert dev_steps(run) == []  # cut short: nothing logged
    done = zofo("train", "--resume", run / "checkpoint")
    assert done.returncode == 0, done.stderr
    assert dev_steps(run) == [0, 2]


# --- eval ----------------------------------------------------------------------------------------------------------

def eval_args(model: Path, shared_data: Path, *extra) -> list[str]:
    return ["eval", "--model", model, "--task", "sst2", "--data", shared_data / "sst2", "--n-train", "16",
            "--n-dev", "8", *extra]


def test_eval_exits_0_after_writing_its_result(model_dir, shared_data, tmp_path):
    out = tmp_path / "eval.json"
    done = zofo(*eval_args(model_dir, shared_data, "--n-test", "16", "--no-progress", "--output", out))
    assert done.returncode == 0 and done.stderr == ""
    result = json.loads(out.read_text())
    assert done.stdout.splitlines() == [f"accuracy: {result['metrics']['accuracy']:.3f}", "n: 16", f"wrote {out}"]
    half = zofo(*eval_args(model_dir, shared_data, "--n-test", "4", "--no-progress", "--output", out, "--dtype",
                           "bfloat16", "--device", "cpu"))
    assert half.returncode == 0 and half.stderr.splitlines() == [
        "zofo: warning: torch.bfloat16 on the CPU: most CPUs have no half-precision matmuls, so it usually runs "
        "several times slower than float32; use --dtype float32 on the CPU"]


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "zofo: error: --batch-size must be >= 1, got 0 (give --batch-size 1 or more)"),
    (["--n-test", "-5"], "zofo: error: --n-test must be >= 1, got -5 (give --n-test 1 or more)"),
    (["--dtype", "float8"], "zofo: error: unknown --dtype 'float8' (use one of: float32"),
    # these exited 1, after loading (a bad --output after the whole evaluation, with a traceback)
    (["--task", "sst3"], "zofo: error: unknown --task 'sst3' (choose one of: boolq, cb,"),
    (["--device", "gpu"], "zofo: error: unknown device 'gpu' (use auto, cpu, cuda or cuda:N)"),
    (["--shots", "4", "--n-train", "0"], "zofo: error: --shots 4 with --n-train 0: the demonstrations are drawn"),
    (["--output", "FOLDER"], "zofo: error: --output FOLDER is a folder (give the file's path"),
    (["--data", "SST2", "--template", "nope"], "zofo: error: task 'sst2' has no template 'nope' (choose one of:"),
])
def test_eval_refuses_bad_options_with_exit_2(tmp_path, shared_data, flags, message):
    places = {"FOLDER": tmp_path, "SST2": shared_data / "sst2"}
    flags, message = [str(places.get(f, f)) for f in flags], message.replace("FOLDER", str(tmp_path))
    done = zofo("eval", "--model", tmp_path / "absent", "--task", "sst2", *flags)
    assert done.returncode == 2 and error_line(done).startswith(message), done.stderr


def test_eval_writes_over_no_file_but_its_own_results(tmp_path):
    """--output keep.yaml replaced the user's config with the evaluation's JSON."""
    keep, notes = tmp_path / "keep.yaml", tmp_path / "notes.json"
    keep.write_text("model:\n  name: mine\n")
    notes.write_text('{"mine": 1}')
    earlier = tmp_path / "earlier.json"  # an earlier `zofo eval` result: --output may replace it
    earlier.write_text(json.dumps({"model": "m", "task": "sst2", "metrics": {}, "protocol": "mezo"}))
    for given, message in ((keep, f"--output {keep}: the command writes a .json file (give a path ending in .json, "
                                  f"e.g. {tmp_path / 'keep.json'})"),
                           (notes, f"--output {notes} exists and is not an earlier result of this command (give a "
                                   "new path, or move the file away first)")):
        done = zofo("eval", "--model", tmp_path / "absent", "--task", "sst2", "--output", given)
        assert done.returncode == 2 and error_line(done) == f"zofo: error: {message}", done.stderr
    assert keep.read_text() == "model:\n  name: mine\n" and notes.read_text() == '{"mine": 1}'
    again = zofo("eval", "--model", tmp_path / "absent", "--task", "sst2", "--output", earlier)
    assert again.returncode != 0 and "--output" not in error_line(again)  # past the output check


@pytest.mark.parametrize("flags, message", [
    (["--task", "sst3"], "zofo: error: unknown data.task 'sst3' (choose one of: boolq, cb,"),
    (["--device", "gpu"], "zofo: error: unknown model.device 'gpu' (use auto, cpu, cuda or cuda:N)"),
    (["--config", SRC.parent / "configs"],
     f"zofo: error: config file {SRC.parent / 'configs'} is a folder, not a YAML file (give the .yaml file"),
])
def test_a_bad_task_device_or_config_path_is_a_usage_error_before_anything_loads(flags, message):
    done = zofo("config", *flags)
    assert done.returncode == 2 and error_line(done).startswith(message)


def test_eval_without_a_task_is_a_usage_error():
    done = zofo("eval", "--model", "x")
    assert done.returncode == 2 and "the following arguments are required: --task" in done.stderr


def test_eval_on_a_truncated_gguf_exits_1_in_one_line(truncated_gguf, shared_data):
    cut, size = truncated_gguf
    done = zofo(*eval_args(cut, shared_data, "--n-test", "8", "--no-progress"))
    assert says_truncated(done, cut, size), done.stderr


def test_ctrl_c_ends_a_long_evaluation_with_130(model_dir, shared_data, tmp_path):
    command = [sys.executable, "-m", "zofo.cli", *map(str, eval_args(model_dir, shared_data, "--n-test", "1000",
                                                                     "--batch-size", "1",
                                                                     "--output", tmp_path / "e.json"))]
    code, out, err = interrupted_when(command, "scoring:")
    assert code == 130 and not_progress(err) == ["zofo: interrupted"] and out == ""
    assert not (tmp_path / "e.json").exists()


# --- convert, plot, replay, config --------------------------------------------------------------------------------

def test_convert_exits_0_1_2_and_130(model_dir, truncated_gguf, tmp_path):
    done = zofo("convert", model_dir, tmp_path / "out")
    assert done.returncode == 0 and not_progress(done.stderr) == [] and (tmp_path / "out" / "config.json").exists()
    assert done.stdout == f"saved {tmp_path / 'out'}\n"
    cut, size = truncated_gguf
    broken = zofo("convert", cut, tmp_path / "out2")
    assert says_truncated(broken, cut, size), broken.stderr
    assert not (tmp_path / "out2").exists()
    assert zofo("convert", model_dir).returncode == 2
    float8 = zofo("convert", model_dir, tmp_path / "out4", "--dtype", "float8")  # refused before anything loads
    assert float8.returncode == 2 and "unknown --dtype 'float8' (use one of: float32" in float8.stderr
    assert not (tmp_path / "out4").exists()
    half = zofo("convert", model_dir, tmp_path / "out5", "--dtype", "bfloat16")  # saved, not computed in: no warning
    assert half.returncode == 0 and "warning" not in half.stderr
    again = zofo("convert", model_dir, tmp_path / "out5")  # an earlier conversion is replaced
    assert again.returncode == 0, again.stderr
    (tmp_path / "mine" / "notes").mkdir(parents=True)  # a folder of other files is not: convert replaces it whole
    (tmp_path / "mine" / "README").write_text("keep")
    kept = zofo("convert", model_dir, tmp_path / "mine")
    assert kept.returncode == 2 and "mine holds README, notes, which a conversion would delete" in kept.stderr
    assert (tmp_path / "mine" / "README").read_text() == "keep"
    (tmp_path / "here").mkdir()  # run there: were the check gone, only this folder would be lost
    here = subprocess.run([sys.executable, "-m", "zofo.cli", "convert", str(model_dir), "."], cwd=tmp_path / "here",
                          capture_output=True, text=True, env=environment(), timeout=300)
    assert here.returncode == 2 and "it is the current folder" in here.stderr
    code, err = held_and_interrupted("zofo.models.load.load_model", "convert", model_dir, tmp_path / "out3")
    assert code == 130 and err.strip() == "zofo: interrupted"


def test_plot_exits_0_1_2_and_130(finished_run, tmp_path):
    run = finished_run[0]
    done = zofo("plot", run, "--out", tmp_path / "curves.png")
    assert done.returncode == 0 and done.stderr == "" and (tmp_path / "curves.png").stat().st_size > 10_000
    missing = zofo("plot", tmp_path)
    assert missing.returncode == 1 and error_line(missing) == (f"zofo: error: {tmp_path} has no log.jsonl (pass "
                                                               "the folder of a zofo train run)")
    assert zofo("plot").returncode == 2
    nested = zofo("plot", run, "--out", tmp_path / "new" / "c.png")  # its folder made (a traceback before)
    assert nested.returncode == 0 and (tmp_path / "new" / "c.png").is_file()
    folder = zofo("plot", run, "--out", tmp_path)
    assert folder.returncode == 2 and error_line(folder).startswith(f"zofo: error: --out {tmp_path} is a folder")
    text = zofo("plot", run, "--out", tmp_path / "c.txt")  # matplotlib's ValueError traceback, after the work
    assert text.returncode == 2 and error_line(text).startswith(f"zofo: error: --out {tmp_path / 'c.txt'}: the "
                                                                "command writes a .png or .pdf or")
    code, err = held_and_interrupted("zofo.run.logs.read_log", "plot", run, "--out", tmp_path / "c.png")
    assert code == 130 and err.strip() == "zofo: interrupted"


def test_replay_exits_0_1_2_and_130(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    done = zofo("replay", run)
    assert done.returncode == 0 and not_progress(done.stderr) == [] and "bit-identical" in done.stdout
    missing = zofo("replay", tmp_path)
    assert missing.returncode == 1 and error_line(missing).startswith(
        f"zofo: error: {tmp_path / 'final' / 'trajectory.json'} does not exist")
    assert zofo("replay", run, "--bogus").returncode == 2
    for flags, said in ((["--out", tmp_path], "is a folder"), (["--device", "foo"], "unknown device 'foo'"),
                        (["--out", tmp_path / "b.bin"], "the command writes a .safetensors file")):
        refused = zofo("replay", run, *flags)  # a raw traceback each, before
        assert refused.returncode == 2 and said in error_line(refused), refused.stderr
    nested = zofo("replay", run, "--out", tmp_path / "new" / "b.safetensors")
    assert nested.returncode == 0 and (tmp_path / "new" / "b.safetensors").is_file()
    code, err = held_and_interrupted("zofo.run.replay.base_backbone", "replay", run)
    assert code == 130 and err.strip() == "zofo: interrupted"


def test_config_exits_0_2_and_130(tmp_path):
    done = zofo("config", "--method", "mezo", "--lr", "1e-5")
    assert done.returncode == 0 and done.stderr == ""
    assert "method: mezo" in done.stdout and "lr: 1.0e-05" in done.stdout
    text = zofo("config", "--output-dir", "run #2", "--template", "yes")  # text flags as written, not read as YAML
    assert text.returncode == 0 and "output_dir: 'run #2'" in text.stdout and "template: 'yes'" in text.stdout
    bad = zofo("config", "--set", "train.log_every=0")
    assert bad.returncode == 2
    assert error_line(bad) == "zofo: error: train.log_every must be >= 1, got 0 (give a value >= 1)"
    code, err = held_and_interrupted("zofo.run.options.load_config", "config")
    assert code == 130 and err.strip() == "zofo: interrupted"


@pytest.mark.parametrize(("argv", "last_line"), [
    (["train", "--stpes", "3"], "zofo train: error: unrecognized arguments: --stpes 3; did you mean --steps?"),
    (["meta-train", "--lamda=2"], "zofo meta-train: error: unrecognized arguments: --lamda=2; did you mean --lam?"),
    (["train", "--zzz"], "zofo train: error: unrecognized arguments: --zzz"),  # nothing close: no guess
    # a required flag missing is reported first: the mistyped one is found among the arguments (--mod abbreviates)
    (["eval", "--mod", "m", "--tsk", "sst2"], "zofo eval: error: the following arguments are required: --task "
                                               "(--tsk is not a flag of zofo eval; did you mean --task?)"),
    (["eval", "--zzz=1"], "zofo eval: error: the following arguments are required: --task "
                          "(--zzz is not a flag of zofo eval)"),
    (["trian"], "zofo: error: argument command: invalid choice: 'trian' (choose from "),  # quoted or not: Python's
    (["meta-tst"], "zofo: error: argument command: invalid choice: 'meta-tst' (choose from "),
])
def test_a_mistyped_flag_or_command_is_answered_with_the_closest_spelling(argv, last_line):
    done = zofo(*argv)
    assert done.returncode == 2
    if "invalid choice" in last_line:
        meant = {"trian": "train", "meta-tst": "meta-test"}[argv[0]]
        assert done.stderr.splitlines()[-1].startswith(last_line)
        assert done.stderr.splitlines()[-1].endswith(f"); did you mean {meant}?")
    else:
        assert done.stderr.splitlines()[-1] == last_line
    assert done.stderr.startswith("usage: zofo [-h]" if "invalid choice" in last_line else f"usage: zofo {argv[0]}")


def test_no_command_is_a_usage_error():
    done = zofo()
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == ("zofo: error: choose a command: train, eval, convert, plot, replay, "
                                            "config, meta-train, meta-test")


@pytest.mark.parametrize("listed", ["'train', 'eval', 'convert'", "train, eval, convert"])  # before / since 3.12.8
def test_the_closest_command_comes_from_the_parser_however_argparse_quotes_the_choices(listed):
    from zofo.cli.main import build_parser
    from zofo.cli.usage import closest_spelling

    message = f"argument command: invalid choice: 'meta-trian' (choose from {listed})"
    assert closest_spelling(build_parser(), message) == "; did you mean meta-train?"


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["convert"], ["meta-train"], ["meta-test"]])
def test_help_starts_without_torch(command):
    """`--help` and a refused flag answer at once: neither imports torch nor transformers (3.5-4.5 s before)."""
    probe = ("import sys\nfrom zofo.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe, *command, "--help"], capture_output=True, text=True,
                          env=environment(), timeout=60)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", done.stdout[-300:]


@pytest.mark.parametrize("package", ["zofo.meta", "zofo.evaluation"])
def test_a_lazy_package_exports_exactly_what_it_names(package):
    import importlib

    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(module._WHERE) and set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        home = importlib.import_module(f"{package}.{module._WHERE[name]}")
        assert getattr(module, name) is getattr(home, name)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        module.__getattr__("nope")
