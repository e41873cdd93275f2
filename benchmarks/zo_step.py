"""Time and memory of one ZO step (2 probes + update) relative to one plain forward, on the GPU.

    PYTHONPATH=src python benchmarks/zo_step.py [--models opt-1.3b,smollm2-135m] [--iters 20] [--out DIR]

bf16, batch 16 x 256 tokens, random init (same cost as real weights; `--smollm2 DIR` loads the real
SmolLM2-135M for its row).  Variants, all in one run,
CUDA events after warm-up, median of ``--iters``, for every direction kind (``zo.DIRECTIONS``: Gaussian,
Gaussian16 -- eight normals per Philox call -- and Rademacher):
* forward: one no-grad forward + LM loss (every loss inside ``causal_attention.unpacked_causal``, as zofo's own
  forwards, so SDPA runs with ``is_causal`` in a CUDA graph as it does eagerly);
* reference: MeZO as published (torch.normal per tensor after reseeding the global RNG; four
  in-place passes +eps, -2 eps, +eps, update);
* zofo: ``zo.estimate`` (exact probing, one fused Philox launch per decoder layer) + ``zo.ZOSGD``
  (one fused SR update launch per dtype, along the probed direction: the bf16 default, ``zo.Probed``);
* zofo+graph: the same probe captured once in a CUDA graph by ``zo.GraphedProbes`` (seed/scale read
  from device tensors) and replayed -- removes the per-kernel launch cost that dominates small models;
* zofo+graph, no sync: the same, with the probes queued by ``zo.queue_probes`` and the update applied from
  the device's c (``zo.DeviceEstimate``), so the host never waits for the probes before launching it, as
  `zofo train` does on CUDA.
* zofo+graph, deferred: the step `zofo train` takes by default with bf16 weights (`zo.update_every` 16):
  16 such steps keep their (seed, c) and one fused pass applies all 16 updates (``zo.chain``); timed over the
  16 steps and divided by 16.
Peak memory: torch.cuda.max_memory_allocated of the step / of a plain forward (stats reset before each).
Writes zo_step.json and zo_step.md under --out (default $OUT or .), prints a table last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
from collections.abc import Callable

import torch
import transformers

from zofo import zo
from zofo.models.attention import unpacked_causal
from zofo.zo.graphs import capture
from zofo.zo.optimizer import LOW_PRECISION_UPDATE_EVERY

SHAPES = {
    "opt-1.3b": (
        "opt",
        dict(
            hidden_size=2048,
            num_hidden_layers=24,
            ffn_dim=8192,
            num_attention_heads=32,
            vocab_size=50272,
            word_embed_proj_dim=2048,
            max_position_embeddings=2048,
        ),
    ),
    "smollm2-135m": (
        "llama",
        dict(
            hidden_size=576,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            intermediate_size=1536,
            vocab_size=49152,
            tie_word_embeddings=True,
            max_position_embeddings=2048,
        ),
    ),
}
EPS, LR = 1e-3, 1e-7


def build(name: str, weights: str | None = None) -> torch.nn.Module:
    """The model of shape ``name`` in bf16 on CUDA: random init, or the real weights in folder ``weights``."""
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    if weights:
        from zofo.models.load import load_model

        return load_model(weights, dtype="bfloat16", device="cuda")[0].eval()

    kind, kw = SHAPES[name]
    cfg = OPTConfig(**kw) if kind == "opt" else LlamaConfig(**kw)
    cls = OPTForCausalLM if kind == "opt" else LlamaForCausalLM
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = cls(cfg).to(torch.bfloat16)
    return model.eval()


def lm_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The LM loss of ``ids``, as zofo's own forwards run it: SDPA keeps ``is_causal`` inside a CUDA graph too."""
    with unpacked_causal():
        return model(input_ids=ids, labels=ids, use_cache=False).loss


def timed(fn: Callable[[], object], iters: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` over ``iters`` runs (CUDA events)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def peak(fn: Callable[[], object]) -> float:
    """Peak GiB allocated while running ``fn`` once."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def advance(step: list[int]) -> int:
    """The next value of a benchmark's running step counter."""
    step[0] += 1
    return step[0]


def reference_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], seed: int) -> None:
    """MeZO's published step: global RNG reseeded, torch.normal per tensor, four in-place passes."""
    params = [p for p in model.parameters() if p.requires_grad]

    def perturb(scale: float) -> None:
        torch.manual_seed(seed)
        for p in params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data + scale * z * EPS

    with torch.no_grad():
        perturb(1)
        l1 = loss_fn()
        perturb(-2)
        l2 = loss_fn()
        perturb(1)
        g = ((l1 - l2) / (2 * EPS)).item()
        torch.manual_seed(seed)
        for p in params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data - LR * g * z


def zofo_step(model, params, loss_fn, direction: str, step: list[int]) -> None:
    est = zo.estimate(loss_fn, model, params, [zo.step_seed(0, advance(step))], EPS, direction=direction)
    zo.ZOSGD().apply(params, est, LR, zo.UpdateState())


def graphed_step(probes: zo.GraphedProbes, ids: torch.Tensor, params, direction: str, step: list[int],
                 sync: bool = True) -> None:
    """zofo's step with each probe a CUDA-graph replay; `sync`: c read on the host before the update (else
    `zo.queue_probes`: c stays on the device and the update reads it there, as `zofo train` does on CUDA)."""
    probe = zo.probe_estimate if sync else zo.queue_probes
    est = probe(lambda s, x: probes({"ids": ids}, s, x), [zo.step_seed(0, advance(step))], EPS, direction=direction)
    zo.ZOSGD().apply(params, est, LR, zo.UpdateState())


DEFERRED = LOW_PRECISION_UPDATE_EVERY  # `zo.update_every` for bf16 weights


def deferred_steps(probes: zo.GraphedProbes, ids: torch.Tensor, params, direction: str, step: list[int]) -> None:
    """`DEFERRED` graphed, queued steps whose updates are applied together in one fused pass."""
    pending = [zo.queue_probes(lambda s, x: probes({"ids": ids}, s, x), [zo.step_seed(0, advance(step))], EPS,
                               direction=direction) for _ in range(DEFERRED)]
    chained, lr = zo.chain(pending, [LR] * DEFERRED)
    zo.ZOSGD().apply(params, chained, lr, zo.UpdateState())


TILES = {
    0: [(256, 4), (512, 4), (1024, 4), (512, 8), (1024, 8)],
    1: [(64, 4), (128, 4), (256, 4), (128, 8), (256, 8), (512, 4), (512, 8), (1024, 8)],
    2: [(128, 4), (256, 4), (512, 4), (256, 8), (512, 8)],
}


def micro(n: int = 1_300_000_000 // 2, sweep: bool = True) -> dict[str, float]:
    """ms of one pass out = x + s*u (and of the in-place SR update) over n bf16 elements, per tile
    (counters per program, warps); x is random (never zeros), rotated between two buffers."""
    from zofo.zo.kernels import triton as kernels

    xs = [torch.randn(n, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    out = torch.empty_like(xs[0])
    seed = torch.tensor([7], device="cuda")
    scale = torch.tensor([1e-3], device="cuda")
    coefs = torch.tensor([1e-7], device="cuda")
    seeds16 = torch.arange(5, 5 + DEFERRED, device="cuda")  # one deferred pass: DEFERRED steps' updates at once
    coefs16 = torch.full((DEFERRED,), 1e-7, device="cuda")
    it = [0]

    def x() -> torch.Tensor:
        it[0] += 1
        return xs[it[0] % 2]

    res = {"elements": n, "copy": timed(lambda: out.copy_(x()), 20)}
    for name, kind, fast in [
        ("gaussian_fast", 0, True),
        ("gaussian_exact", 0, False),
        ("gaussian16_fast", 2, True),
        ("rademacher", 1, True),
    ]:
        tiles = TILES[kind] if sweep and name != "gaussian_exact" else [kernels.TILE[kind]]
        for t in tiles:
            tag = f"{name}_r{t[0]}w{t[1]}"
            res[f"perturb_{tag}"] = timed(
                lambda k=kind, f=fast, t=t: kernels.perturb(x(), out, 5, seed, scale, k, 0, f, t), 20
            )
            res[f"update_{tag}"] = timed(
                lambda k=kind, f=fast, t=t: kernels.update_(x(), 5, seed, coefs, 1.0, k, 0, f, t), 20
            )
            if t == kernels.TILE[kind]:  # the update along the probed direction (bf16 default, zo.Probed)
                res[f"update_probed_{tag}"] = timed(
                    lambda k=kind, f=fast, t=t: kernels.update_(x(), 5, seed, coefs, 1.0, k, 0, f, t, 1e-3, 2), 20
                )
                res[f"update_probed{DEFERRED}_{tag}"] = timed(
                    lambda k=kind, f=fast, t=t: kernels.update_(x(), 5, seeds16, coefs16, 1.0, k, 0, f, t, 1e-3, 2),
                    5,
                )
    res.update(fast_math_error(xs[0][: 1 << 24]))
    res.update(grouped_probe(sweep=sweep))
    return res


def opt_layer_shapes(d: int = 2048, ffn: int = 8192) -> list[tuple[int, ...]]:
    """Parameter shapes of one OPT decoder layer (OPT-1.3B by default), in module order."""
    attention = [(d, d), (d,)] * 4  # k, v, q, out projections
    return [*attention, (d,), (d,), (ffn, d), (ffn,), (d, ffn), (d,), (d,), (d,)]


def graphed(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` captured in a CUDA graph as zofo captures its probes (warm-ups on the same stream: a new stream
    would keep a cuBLAS workspace of its own through later peaks); returns the replay."""
    graph, _ = capture(fn, fn)
    return graph.replay


def grouped_probe(layers: int = 24, sweep: bool = False) -> dict[str, float]:
    """ms of one probe's perturbation as the step makes it (one grouped launch per OPT-1.3B decoder layer,
    each tensor its own allocation) against one flat pass over as many elements, and against one flat launch per
    layer's worth of elements (``split``), and against the grouped kernel on one tensor per layer (``grouped1``:
    the row lookup without many tensors); ``sweep``: per tile."""
    from zofo.zo import multi
    from zofo.zo.kernels import triton as kernels

    groups = [[torch.randn(s, device="cuda", dtype=torch.bfloat16) for s in opt_layer_shapes()] for _ in range(layers)]
    keys = [list(range(i * 100, i * 100 + len(g))) for i, g in enumerate(groups)]
    n = sum(t.numel() for g in groups for t in g)
    flat, out = torch.randn(n, device="cuda", dtype=torch.bfloat16), torch.empty(n, device="cuda", dtype=torch.bfloat16)
    seed, scale = torch.tensor([7], device="cuda"), torch.tensor([1e-3], device="cuda")
    res = {"probe_elements": n}

    def probe(kind: int, tile: tuple[int, int] | None) -> None:
        for g, ks in zip(groups, keys, strict=True):
            multi.perturb_group(g, ks, seed, scale, kind, tile=tile)

    def grouped_whole(kind: int, tile: tuple[int, int] | None) -> None:
        for i, x in enumerate(flat.chunk(layers)):
            multi.perturb_group([x], [i], seed, scale, kind, tile=tile)

    def split(kind: int, tile: tuple[int, int] | None) -> None:
        for x, o in zip(flat.chunk(layers), out.chunk(layers), strict=True):
            kernels.perturb(x, o, 5, seed, scale, kind, 0, None, tile)

    for name, kind in [("gaussian", 0), ("gaussian16", 2), ("rademacher", 1)]:
        # default tiles untagged (the grouped launch's own, kernels.GROUP_TILE); in a sweep every tile tagged
        for t in TILES[kind] if sweep else [None]:
            tag = name if t is None else f"{name}_r{t[0]}w{t[1]}"
            try:
                res[f"probe_grouped_{tag}"] = timed(graphed(lambda k=kind, t=t: probe(k, t)), 20)  # as the step
                res[f"probe_flat_{tag}"] = timed(
                    lambda k=kind, t=t: kernels.perturb(flat, out, 5, seed, scale, k, 0, None, t), 20
                )
                # as many launches as layers, each one flat pass over a layer's worth: what launches alone cost
                res[f"probe_split_{tag}"] = timed(graphed(lambda k=kind, t=t: split(k, t)), 20)
                # the grouped kernel on one tensor per layer: its row lookup without many tensors' tails
                res[f"probe_grouped1_{tag}"] = timed(graphed(lambda k=kind, t=t: grouped_whole(k, t)), 20)
            except Exception as e:  # a tile that does not compile (registers) is recorded, not fatal
                res[f"probe_error_{tag}"] = repr(e)[:200]
    return res


def fast_math_error(like: torch.Tensor) -> dict[str, float]:
    """Largest |u_fast - u_exact| per Gaussian kind over ``like``'s elements (float32 u, scale 1)."""
    from zofo.zo.kernels import triton as kernels

    seed, one = torch.tensor([7], device="cuda"), torch.tensor([1.0], device="cuda")
    u = [torch.empty_like(like, dtype=torch.float32) for _ in range(2)]
    err = {}
    for name, kind in [("gaussian", 0), ("gaussian16", 2)]:
        for buf, fast in zip(u, (True, False), strict=True):
            kernels.perturb(None, buf, 5, seed, one, kind, 0, fast)
        err[f"fast_max_abs_err_{name}"] = (u[0] - u[1]).abs().max().item()
    return err


def attempt(row: dict, name: str, fn: Callable[[], object], iters: int) -> None:
    """row[name_ms], row[name_peak_gib]; an error is recorded instead of ending the run."""
    try:
        row[f"{name}_ms"] = timed(fn, iters)
        row[f"{name}_peak_gib"] = peak(fn)
    except Exception as e:
        row[f"{name}_error"] = repr(e)[:300]
        print(name, "failed:", row[f"{name}_error"])


def bench_model(name: str, iters: int, graphs: bool, weights: str | None = None) -> dict:
    model = build(name, weights)
    params = dict(model.named_parameters())
    ids = torch.randint(0, model.config.vocab_size, (16, 256), device="cuda")

    def loss_fn() -> torch.Tensor:
        return lm_loss(model, ids)

    step = [0]
    row: dict = {"model": name, "weights": weights or "random init",
                 "params": sum(p.numel() for p in params.values())}
    with torch.no_grad():
        row["forward_ms"] = timed(loss_fn, iters)
        row["forward_peak_gib"] = peak(loss_fn)
        if graphs:  # the denominator stays the plain forward; this one runs as the step's forwards do
            try:
                replay = graphed(loss_fn)
            except Exception as e:  # recorded, as `attempt` does
                row["graphed_forward_error"] = repr(e)[:300]
            else:
                attempt(row, "graphed_forward", replay, iters)
                del replay  # the graph and its memory pool, before any step's peak is measured
                torch.cuda.empty_cache()
    attempt(row, "reference", lambda: reference_step(model, loss_fn, advance(step)), iters)
    for direction in zo.DIRECTIONS:
        attempt(
            row, f"zofo_{direction}", lambda d=direction: zofo_step(model, params, loss_fn, d, step), iters
        )
        if graphs:
            probes = zo.GraphedProbes(model, params, lambda inputs: lm_loss(model, inputs["ids"]), direction)
            attempt(row, f"graph_{direction}",
                    lambda p=probes, d=direction: graphed_step(p, ids, params, d, step), iters)
            attempt(row, f"async_{direction}",
                    lambda p=probes, d=direction: graphed_step(p, ids, params, d, step, sync=False), iters)
            attempt(row, f"deferred_{direction}",
                    lambda p=probes, d=direction: deferred_steps(p, ids, params, d, step), max(3, iters // 4))
            if f"deferred_{direction}_ms" in row:
                row[f"deferred_{direction}_ms"] /= DEFERRED  # per step
            if not probes.capture:
                row[f"graph_{direction}_error"] = "capture failed (see the warning above)"
            del probes
    with torch.no_grad():  # the denominator again: how far a plain forward's time drifts within one process
        row["forward_after_ms"] = timed(loss_fn, iters)
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| model | forward ms | forward ms, after the steps | graphed forward ms | ref step / fwd | zofo gauss / fwd | "
        "zofo rad / fwd | "
        "graph gauss / fwd | graph rad / fwd | graph no sync gauss / fwd | graph no sync rad / fwd | "
        "deferred gauss / fwd | deferred rad / fwd | graph no sync gauss16 / fwd | deferred gauss16 / fwd | "
        "ref / eager zofo (gauss, rad) | ref / best zofo | peak step / fwd (gauss) |",
        "|" + "---|" * 18,
    ]
    for r in rows:
        f = r["forward_ms"]
        ours = [
            v for k, v in r.items()
            if k.endswith("_ms") and k.startswith(("zofo_gaussian", "graph_gaussian", "async_gaussian",
                                                   "deferred_gaussian"))
        ]
        best = min(ours) if ours else float("nan")
        ratio = lambda k, r=r, f=f: f"{r[k] / f:.2f}" if k in r else "-"  # noqa: E731
        speedup = lambda k, r=r: f"{r['reference_ms'] / r[k]:.2f}" if k in r and "reference_ms" in r else "-"  # noqa: E731
        mem = r.get("zofo_gaussian_peak_gib", float("nan")) / r["forward_peak_gib"]
        graphed_fwd = f"{r['graphed_forward_ms']:.1f}" if "graphed_forward_ms" in r else "-"
        fwd_after = f"{r['forward_after_ms']:.1f}" if "forward_after_ms" in r else "-"
        lines.append(
            f"| {r['model']} | {f:.1f} | {fwd_after} | {graphed_fwd} | {ratio('reference_ms')} | "
            f"{ratio('zofo_gaussian_ms')} | "
            f"{ratio('zofo_rademacher_ms')} | {ratio('graph_gaussian_ms')} | "
            f"{ratio('graph_rademacher_ms')} | {ratio('async_gaussian_ms')} | {ratio('async_rademacher_ms')} | "
            f"{ratio('deferred_gaussian_ms')} | {ratio('deferred_rademacher_ms')} | "
            f"{ratio('async_gaussian16_ms')} | {ratio('deferred_gaussian16_ms')} | "
            f"{speedup('zofo_gaussian_ms')}, {speedup('zofo_rademacher_ms')} | "
            f"{r.get('reference_ms', float('nan')) / best:.2f} | {mem:.3f} |"
        )
    return "\n".join(lines)


def group_tile(spec: str) -> tuple[int, tuple[int, int]]:
    """``--group-tile KIND=R,W`` -> (kind, (R, W)) (`kernels.tile_spec`); a malformed one exits saying why."""
    from zofo.zo.kernels import triton as kernels

    try:
        return kernels.tile_spec(spec)
    except ValueError as error:
        raise SystemExit(f"--group-tile {spec!r}: {error}") from None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="opt-1.3b,smollm2-135m")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--smollm2", help="folder of the real SmolLM2-135M (zofo convert); default: its shape, random")
    ap.add_argument("--micro", action="store_true", help="also time single kernel passes")
    ap.add_argument("--micro-only", action="store_true", help="only the kernel passes (tile sweep)")
    ap.add_argument("--evict-first", action="store_true",
                    help="perturbed copies stream through L2 evict-first (kernels.EVICT_FIRST), to compare")
    ap.add_argument("--group-tile", action="append", default=[], metavar="KIND=R,W",
                    help="grouped launches of KIND (gaussian, rademacher, gaussian16) use R counters per program and "
                    "W warps (kernels.GROUP_TILE), to compare; repeatable")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    from zofo.zo.kernels import triton as kernels

    kernels.EVICT_FIRST = args.evict_first
    for spec in args.group_tile:
        kind, tile = group_tile(spec)
        kernels.GROUP_TILE[kind] = tile
    rows = []
    for m in [] if args.micro_only else args.models.split(","):
        weights = args.smollm2 if m == "smollm2-135m" else None
        rows.append(bench_model(m, args.iters, not args.no_graphs, weights))
        torch.cuda.empty_cache()
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,  # decides the attention masks inside CUDA graphs
        "evict_first": kernels.EVICT_FIRST,
        "group_tile": {name: kernels.GROUP_TILE[k] for name, k in kernels.KINDS.items()},
        "batch": [16, 256],
        "dtype": "bfloat16",
        "eps": EPS,
        "iters": args.iters,
        "rows": rows,
    }
    if args.micro or args.micro_only:
        try:
            result["micro_ms"] = micro(sweep=args.micro_only)
        except Exception as e:
            print("micro failed:", repr(e)[:300])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "zo_step.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    md = table(rows)
    with open(os.path.join(args.out, "zo_step.md"), "w") as fh:
        fh.write(
            "# ZO step benchmark\n\n"
            f"`PYTHONPATH=src python benchmarks/zo_step.py {' '.join(os.sys.argv[1:])}`"
            f"  \n{result['date']}, {result['device']}, torch {result['torch']}, "
            f"transformers {result['transformers']}, perturbed copies evict-first in L2: {result['evict_first']}, "
            f"grouped launches' tiles (counters, warps): {result['group_tile']}"
            f"\n\n{md}\n"
        )
        if "micro_ms" in result:
            m = result["micro_ms"]
            passes = ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "elements" and not k.startswith("probe"))
            probes = ", ".join(
                f"{k} {v:.2f}" for k, v in m.items() if k.startswith("probe_") and isinstance(v, float)
            )
            fh.write(f"\nSingle passes over {m['elements']} bf16 elements (ms): {passes}\n")
            if probes:
                fh.write(
                    f"\nOne probe's perturbation over {m['probe_elements']} elements, 24 grouped launches (one per "
                    f"OPT-1.3B decoder layer) against one flat pass (ms): {probes}\n"
                )
    print(json.dumps(result.get("micro_ms", {}), indent=0))
    print(md)


if __name__ == "__main__":
    main()
