"""Several training runs in one process, each in its own thread on its own CUDA stream.

What one process saves over several is CUDA contexts and start-ups; it adds no GPU throughput once one run keeps
the GPU busy (MeZO: docs/RESULTS.md sections 5 and 8), and less than processes where one run does not (six Bilevel
ZOFO runs in bf16: 2.0x, six processes 2.6x; section 27). Six graphed FO-LoRA runs in one process hung on an H100,
twice in two tries (benchmarks/results/gpu-2026-12-07/together-fo-hang/: a kernel that never finishes, cause not
found), so first-order runs with CUDA graphs on a GPU are refused here: run them as processes, or eagerly. Each
run starts up alone, under a lock (loading; torch's global RNG is seeded per run
for the PEFT modules' initial values), then all train at once; CUDA graphs are captured per thread, so a run
computes what it would compute alone. Peak memory is not recorded (torch counts it per process). A SIGINT or
SIGTERM to the process stops every run after its current step, each with its checkpoint (`zofo.run.interrupt`: the
handler is the main thread's, the request shared).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import torch

from zofo.errors import ZofoError
from zofo.methods.fo import FirstOrder
from zofo.models.device import resolve_device
from zofo.models.load import MATMUL_PRECISION
from zofo.registry import METHODS
from zofo.run.interrupt import StopRequest, stop_on_signal
from zofo.run.options import RunConfig
from zofo.run.recipe import Run, method_settings

_STARTUP = threading.Lock()


def train_together(cfgs: Sequence[RunConfig]) -> list[dict | Exception]:
    """Train every run of ``cfgs`` at once; per run, its result, or the exception it raised (the others go on)."""
    if not cfgs:
        return []
    _check_one_matmul_precision(cfgs)
    _check_no_graphed_first_order(cfgs)
    with stop_on_signal() as stop, ThreadPoolExecutor(max_workers=len(cfgs), thread_name_prefix="zofo-run") as pool:
        return list(pool.map(lambda cfg: _train_on_own_stream(cfg, stop), cfgs))


def _check_one_matmul_precision(cfgs: Sequence[RunConfig]) -> None:
    """The float32 matmul precision is the process's (`MATMUL_PRECISION`): runs of one process share it."""
    asked = {MATMUL_PRECISION[cfg.model.dtype] for cfg in cfgs if cfg.model.dtype in MATMUL_PRECISION}
    if len(asked) > 1:
        raise ZofoError("runs trained in one process mix model.dtype tf32 with float32 (the float32 matmul precision "
                        "is the process's)", "give them one of the two, or train them in separate processes",
                        "model.dtype")


def _check_no_graphed_first_order(cfgs: Sequence[RunConfig]) -> None:
    """First-order runs replaying CUDA graphs beside other runs hung an H100 (the module's docstring); a run alone,
    one that steps eagerly (``train.max_rows`` pieces) and `bilevel-fo` (its graphed steps are Bilevel ZOFO's, which
    did not hang six at a time) are let through."""
    if len(cfgs) < 2:
        return
    for cfg in cfgs:
        first_order = issubclass(METHODS.get(cfg.train.method), FirstOrder)
        if first_order and method_settings(cfg).graphed and resolve_device(cfg.model.device).startswith("cuda"):
            raise ZofoError(f"{cfg.train.method} with CUDA graphs is not trained beside other runs in one process: six "
                            "such runs hung an H100 twice (benchmarks/results/gpu-2026-12-07/together-fo-hang/)",
                            "train it in its own process (experiments/study.py --together 1), or set "
                            "train.cuda_graphs false", "train.cuda_graphs")


def _train_on_own_stream(cfg: RunConfig, stop: StopRequest) -> dict | Exception:
    try:
        run = Run(cfg, startup=_STARTUP, stop=stop)
        cuda = run.device.type == "cuda"
        with torch.cuda.stream(torch.cuda.Stream(run.device)) if cuda else nullcontext():
            return run.execute()
    except Exception as err:  # noqa: BLE001 -- one failed run must not stop the others
        traceback.print_exc()
        return err
