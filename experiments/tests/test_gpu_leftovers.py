"""experiments/gpu_leftovers.sh, run by bash as the GPU session scripts run it (`set -euo pipefail`), with a stand-in
`nvidia-smi` that lists the processes of a state file while they live."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: a stand-in for `nvidia-smi --query-compute-apps=pid --format=csv,noheader`: the live PIDs of the state file
FAKE_SMI = """#!/bin/sh
for p in $(cat "{state}"); do
  if [ "$p" = CALLER ]; then  # the shell that runs the function (it exports its PID)
    echo " $CALLER_PID"
  elif [ "$p" = ERROR ]; then
    echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
  elif [ -d /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status; then
    echo " $p"
  fi
done
"""
#: a GPU job an earlier call left behind: it answers SIGUSR1 with its stacks, as zofo's processes do
LEFT_BEHIND = """
import sys, time
from zofo.run.interrupt import stacks_on_request
stacks_on_request()
print("up", flush=True)
def still_training():
    while True:
        time.sleep(0.05)
still_training()
"""

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="the stand-in reads /proc")


def end_leftovers(tmp_path: Path, pids: list[int | str], **env: str) -> subprocess.CompletedProcess:
    state, bin_dir = tmp_path / "gpu-pids", tmp_path / "bin"
    state.write_text(" ".join(map(str, pids)))
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI.format(state=state))
    smi.chmod(0o755)
    script = (f'set -euo pipefail; export CALLER_PID=$$; source "{ROOT}/experiments/gpu_leftovers.sh"; '
              'end_leftover_gpu_processes; echo done')
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env})


def left_behind(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "left-behind.log"
    with open(log, "w") as out:
        job = subprocess.Popen([sys.executable, "-c", LEFT_BEHIND], stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, start_new_session=True)
    deadline = time.monotonic() + 60
    while "up" not in log.read_text():
        assert time.monotonic() < deadline and job.poll() is None, log.read_text()
        time.sleep(0.05)
    return job, log


def test_a_process_an_earlier_call_left_on_the_gpu_writes_its_stacks_and_is_killed(tmp_path):
    job, log = left_behind(tmp_path)
    done = end_leftovers(tmp_path, [job.pid])
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    assert done.stderr == f"ending the GPU processes an earlier call left running: {job.pid}\n"
    assert job.wait(timeout=10) == -signal.SIGKILL
    assert "line" in log.read_text() and "in still_training" in log.read_text()  # the stacks, before the kill


def test_keep_gpu_processes_leaves_them_and_no_nvidia_smi_is_nothing_to_do(tmp_path):
    job, _ = left_behind(tmp_path)
    try:
        kept = end_leftovers(tmp_path, [job.pid], KEEP_GPU_PROCESSES="1")
        assert (kept.returncode, kept.stdout, kept.stderr) == (0, "done\n", "")
        assert job.poll() is None
    finally:
        job.kill()
        job.wait()
    no_smi = tmp_path / "no-smi"  # the tools the script uses, and no nvidia-smi
    no_smi.mkdir()
    for tool in ("tr", "sed", "seq", "sleep"):
        (no_smi / tool).symlink_to(shutil.which(tool))
    script = f'set -euo pipefail; source "{ROOT}/experiments/gpu_leftovers.sh"; end_leftover_gpu_processes; echo done'
    bare = subprocess.run([shutil.which("bash"), "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": str(no_smi)})
    assert (bare.returncode, bare.stdout, bare.stderr) == (0, "done\n", "")


def test_an_error_message_and_the_calling_shell_are_not_taken_for_gpu_processes(tmp_path):
    started = time.monotonic()
    done = end_leftovers(tmp_path, ["ERROR", "CALLER"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\n", "")  # nothing ended, no wait for it to go
    assert time.monotonic() - started < 20
