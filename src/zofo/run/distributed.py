"""A run over several processes: `torchrun --nproc-per-node N zofo train ...` with the flags of one process.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 `join` starts the process group (NCCL on CUDA,
each rank on cuda:LOCAL_RANK; gloo on the CPU) and checks the launch before anything loads:

    every rank resolved the same config     (the flags, config file and seed of rank 0; a difference names its key)
    train.batch_size divides among the ranks (each takes B / world examples of every global batch)
    train.fsdp: a method and rule that a sharded backbone supports (`check_fsdp`, also in one process)

Without WORLD_SIZE (or with 1) a run is one process, exactly as before. What the ranks exchange is in
`zofo.ranks`; rank 0 alone writes the run folder, which the other ranks read only to resume and to reload the
best-on-dev weights (a shared folder on several nodes). `shard_backbone` applies FSDP2 to the decoder layers and the
whole model (`train.fsdp`); the ZO engine perturbs the gathered layers and updates each rank's rows
(`zofo.zo.perturb`, `zofo.zo.shards`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from zofo.config import flat
from zofo.errors import UsageError
from zofo.methods import METHODS
from zofo.ranks import Ranks
from zofo.run.options import RunConfig, method_class


def launched_world() -> int:
    """The number of processes torchrun started (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by it): known before the group starts."""
    return int(os.environ.get("RANK", "0"))


def rank_device(device: str) -> str:
    """The device of this rank: a bare "cuda" becomes cuda:LOCAL_RANK under torchrun (one GPU per process)."""
    if device == "cuda" and launched_world() > 1:
        index = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(index)
        return f"cuda:{index}"
    return device


def join(cfg: RunConfig, device: torch.device) -> Ranks:
    """This process's ranks: one process unless launched with WORLD_SIZE > 1; then the process group (started once
    per process) and a CPU group for the host-side exchanges, with the launch checked (`check_launch`)."""
    if launched_world() <= 1:
        if cfg.train.fsdp:  # refused alike in one process, which has nothing to shard over and keeps the model whole
            check_fsdp(cfg)
        return Ranks()
    ranks = start_group(device)
    check_launch(cfg, ranks)
    return ranks


def start_group(device: torch.device) -> Ranks:
    """The process group of a torchrun launch (started once per process: NCCL on CUDA, else gloo) and a CPU group
    for the host-side exchanges."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Ranks(dist.get_rank(), dist.get_world_size(), control)


def leave_group() -> None:
    """Leave the process group a torchrun launch started (at the end of a command): a process that exits with its
    group alive can tear a connection that another rank's gloo or NCCL still holds, which aborts that rank."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_launch(cfg: RunConfig, ranks: Ranks) -> None:
    """Refuse a launch whose ranks would not train as one run (every rank raises the same error)."""
    check_same_config(cfg, ranks)
    check_batch_divides(cfg.train.batch_size, ranks, "train.batch_size")
    if cfg.train.fsdp:
        check_fsdp(cfg)


def check_batch_divides(batch: int, ranks: Ranks, key: str) -> None:
    """Each rank takes an equal share of every batch: the world size must divide it."""
    if batch % ranks.world:
        multiple = -(-batch // ranks.world) * ranks.world
        raise UsageError(f"{key} {batch} does not divide among {ranks.world} ranks (each takes an equal "
                         f"share of every batch)", f"give --batch-size {multiple} (a multiple of {ranks.world}) or "
                         f"launch a number of processes that divides {batch}", key)


def check_same_config(cfg: RunConfig, ranks: Ranks) -> None:
    """Every rank must train with rank 0's resolved config (seeds included): the first key that differs is named."""
    check_same_values(flat(cfg), ranks)


def check_same_values(values: dict, ranks: Ranks) -> None:
    """Every rank must hold rank 0's ``values`` (a flat dict of options): the first key that differs is named."""
    configs = ranks.gather(values)
    for rank, other in enumerate(configs):
        differ = [k for k in configs[0] if other.get(k) != configs[0][k]]
        if differ:
            key = differ[0]
            raise UsageError(f"rank {rank} resolved {key}={other.get(key)!r} where rank 0 has {configs[0][key]!r} "
                             f"(torchrun ranks must run one config)", "launch every rank with the same flags, "
                             "config file and --seed", key)


def check_fsdp(cfg: RunConfig) -> None:
    """A sharded backbone (train.fsdp) serves the methods that say so (`Method.shards_backbone`), with whole batches
    (every rank must run the same forwards: each all-gathers the layers); a backbone trained by ZO takes the ZO-SGD
    rule (stateless: no optimizer state to shard) and checkpoints that keep the seed trajectory."""
    if not method_class(cfg).shards_backbone:
        served = ", ".join(n for n in METHODS if METHODS.get(n).shards_backbone)
        raise UsageError(f"train.fsdp does not apply to method {cfg.train.method} (it shards a backbone that ZO "
                         "trains or that stays frozen)", f"use --method {served}, or drop train.fsdp", "train.fsdp")
    if cfg.train.max_rows is not None:
        raise UsageError("train.fsdp takes whole batches: ranks cutting their shares into different numbers of pieces "
                         "would run unmatched all-gathers", "drop train.max_rows", "train.max_rows")
    if not method_class(cfg).trains_backbone:
        return
    if cfg.zo.rule != "sgd":
        raise UsageError(f"train.fsdp needs zo.rule sgd, got {cfg.zo.rule!r}", "set zo.rule=sgd", "zo.rule")
    if cfg.train.checkpoint_weights != "trajectory":
        raise UsageError("train.fsdp keeps checkpoints as seed trajectories", "set train.checkpoint_weights="
                         "trajectory", "train.checkpoint_weights")


def shard_backbone(model: nn.Module, device: torch.device, ranks: Ranks) -> nn.Module:
    """FSDP2 over the ranks: each decoder layer (an element of an nn.ModuleList) a unit, then the whole model (the
    embeddings, final norm and head, tied weights kept together). One process: the model as it is."""
    if not ranks.parallel:
        return model
    from torch.distributed.device_mesh import init_device_mesh  # here: FSDP's import costs 0.5 s, paid by runs
    from torch.distributed.fsdp import fully_shard  # that shard only

    mesh = init_device_mesh(device.type, (ranks.world,))
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for layer in module:
                fully_shard(layer, mesh=mesh)
    # the root too gives its whole parameters back after each forward: between forwards every module holds the
    # sharded parameters, which are those the method's groups name (the root keeps them by default)
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    return model


def shared_run_dir(run_dir: Path, ranks: Ranks) -> Path:
    """Rank 0's run folder (a default one is named by the time, which ranks started apart may read differently)."""
    return Path(ranks.gather(str(run_dir))[0])
