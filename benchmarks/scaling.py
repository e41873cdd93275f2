"""Step time, sequences per second and bytes communicated per ZO step against the number of ranks.

Two settings, random init, bf16 on CUDA (float32 on the CPU), global batch --batch sequences of --length tokens:
* dp:   data-parallel MeZO on the OPT-1.3B shape: every rank holds the whole model and probes B / world
        sequences; the probe losses (2q float64) are all-reduced, nothing else.
* fsdp: MeZO with the backbone sharded by FSDP2 on a 7B-class Llama shape (hidden 4096, 32 layers, 11008 MLP):
        each forward all-gathers every layer (FSDP's own traffic, reported as an estimate: 2q forwards x weight bytes
        x (world - 1) / world received per rank), the losses are all-reduced, each rank updates its rows.
Each launch measures one world size and appends one JSON line to --out/scaling.jsonl; --tiny uses 2-layer shapes
of the same families (a CPU check of the code path, not a measurement of the large shapes).

    # one GPU, then 2, 4, 8 GPUs of one node (NCCL; leave NVLink multicast off: NCCL_NVLS_ENABLE=0)
    PYTHONPATH=src python benchmarks/scaling.py --mode dp --out OUT                          # world 1, no torchrun
    NCCL_NVLS_ENABLE=0 PYTHONPATH=src torchrun --nproc-per-node 2 benchmarks/scaling.py --mode dp --out OUT
    NCCL_NVLS_ENABLE=0 PYTHONPATH=src torchrun --nproc-per-node 4 benchmarks/scaling.py --mode dp --out OUT
    NCCL_NVLS_ENABLE=0 PYTHONPATH=src torchrun --nproc-per-node 8 benchmarks/scaling.py --mode dp --out OUT
    # the same four with --mode fsdp (7B: world 1 needs ~14 GB of bf16 weights, fits one 80 GB GPU)
    # CPU, tiny shapes, gloo:
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/scaling.py --tiny --mode dp --out OUT   # torchrun sets 1 too
    PYTHONPATH=src torchrun --nproc-per-node 2 benchmarks/scaling.py --tiny --mode dp --out OUT

Scaling efficiency at world N: (sequences/s at N) / (N x sequences/s at 1) at a fixed global batch (strong
scaling: each rank probes B / N sequences); give --batch 16N for the same per-rank work (weak scaling).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import transformers

from zofo.ranks import Ranks
from zofo.run.distributed import shard_backbone
from zofo.zo.optimizer import ZOOptimizer
from zofo.zo.options import ZOOptions
from zofo.zo.schedules import constant

SHAPES = {
    "opt-1.3b": lambda tiny: transformers.OPTConfig(
        hidden_size=64 if tiny else 2048, num_hidden_layers=2 if tiny else 24, num_attention_heads=4 if tiny else 32,
        ffn_dim=256 if tiny else 8192, word_embed_proj_dim=64 if tiny else 2048, vocab_size=512 if tiny else 50272,
        max_position_embeddings=2048),
    "llama-7b": lambda tiny: transformers.LlamaConfig(
        hidden_size=64 if tiny else 4096, num_hidden_layers=2 if tiny else 32, num_attention_heads=4 if tiny else 32,
        num_key_value_heads=4 if tiny else 32, intermediate_size=172 if tiny else 11008,
        vocab_size=512 if tiny else 32000),
}


def start() -> tuple[Ranks, torch.device]:
    """The ranks of this launch (torchrun's env; one process without it) and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world == 1:
        return Ranks(), device
    dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    control = dist.new_group(backend="gloo") if cuda else None
    return Ranks(dist.get_rank(), dist.get_world_size(), control), device


def build(shape: str, tiny: bool, sharded: bool, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(SHAPES[shape](tiny), dtype=dtype).eval()
    return shard_backbone(model, device, ranks) if sharded else model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict:
    ranks, device = start()
    shape = "llama-7b" if args.mode == "fsdp" else "opt-1.3b"
    model = build(shape, args.tiny, args.mode == "fsdp", ranks, device)
    params = {n: p for n, p in model.named_parameters()}
    zo = ZOOptimizer(model, params, ZOOptions(update_every=1), constant(1e-6), seed=0, ranks=ranks)
    share = args.batch // ranks.world
    tokens = torch.randint(0, model.config.vocab_size, (share, args.length), device=device,
                           generator=torch.Generator(device).manual_seed(ranks.rank))

    def loss():
        return model(input_ids=tokens, labels=tokens).loss

    times, sent = [], []
    for step in range(args.warmup + args.steps):
        before = ranks.sent_bytes
        sync(device)
        t0 = time.perf_counter()
        zo.apply(zo.estimate(loss, step), step)
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            sent.append(ranks.sent_bytes - before)
    weight_bytes = sum(p.numel() * p.element_size() for p in params.values())
    step_s = statistics.median(times)
    gathered = 2 * weight_bytes * (ranks.world - 1) / ranks.world if args.mode == "fsdp" else 0
    return {"mode": args.mode, "shape": shape + (" (tiny)" if args.tiny else ""), "device": str(device.type),
            "world": ranks.world, "global_batch": args.batch, "length": args.length, "step_s": round(step_s, 5),
            "sequences_per_s": round(args.batch / step_s, 2), "zofo_bytes_per_step": statistics.median(sent),
            "fsdp_allgather_bytes_per_step_estimate": int(gathered), "parameters": sum(
                p.numel() for p in params.values()), "steps": args.steps, "rank": ranks.rank}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("dp", "fsdp"), default="dp")
    parser.add_argument("--tiny", action="store_true", help="2-layer shapes of the same families (CPU check)")
    parser.add_argument("--batch", type=int, default=16, help="global batch (sequences), divided among the ranks")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    record = measure(args)
    if record["rank"] == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "scaling.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
