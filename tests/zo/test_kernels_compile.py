"""Every fused kernel variant compiles for the GPU the project runs on (sm_90), here, without a GPU.

The CPU runs the kernels in Triton's interpreter, which accepts code the compiler may not; and a fast-math
variant that fails to compile would silently fall back to the slower exact one (`kernels.launch`). So each
variant (perturb / update, per-tensor and grouped, every direction kind, fast and exact, every probed mode, with
and without evict-first copies) is compiled for sm_90 with the ptxas that ships with Triton, in a subprocess
without the interpreter, its bf16 tensors marked 16-byte aligned as at launch; the PTX is then checked for
vector accesses and cache hints.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="needs triton")
SCRIPT = Path(__file__).with_name("compile_for_hopper.py")


def _has_nvidia_backend() -> bool:
    try:
        from triton.backends.nvidia import compiler  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_nvidia_backend(), reason="triton without its NVIDIA backend")
def test_every_kernel_variant_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPT.parents[2] / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    compiled = [line for line in done.stdout.splitlines() if "cubin bytes" in line]
    assert len(compiled) == 42, done.stdout
    assert all(int(line.rsplit(" ", 1)[1]) > 0 for line in compiled)
    assert all(0 < int(line.split(" registers ")[1].split()[0]) <= 255 for line in compiled), done.stdout
    # every bf16 stream is read and written in vectors (aligned tensors, as at launch), never element by element
    assert all(" scalar16 0 " in line and " vector 0 " not in line for line in compiled), done.stdout
    # a perturbation marks its streams evict-first exactly when asked (kernels.EVICT_FIRST); updates never do
    perturbs = [line for line in compiled if "perturb" in line]
    assert len(perturbs) == 24 and all((" evict_first 0 " not in line) == ("'EVICTION': 'evict_first'" in line)
                                       for line in perturbs), done.stdout
    assert all(" evict_first 0 " in line for line in compiled if "update" in line)
