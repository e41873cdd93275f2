"""The training batches each run of a study drew, re-drawn on the CPU: the largest fixed-shape batch per run.

    PYTHONPATH=src python benchmarks/batch_shapes.py RUNS [RUNS ...] --data-root ../shared/data --out DIR

A train step's peak memory grows with its batch's padded width (`static_batches.to_static`: rows padded to a
multiple of 64 tokens), so a run's peak is set by the widest batch it happened to draw. Methods draw different
numbers of batches in a run: FO-PEFT and MeZO one per step, Bilevel ZOFO K + 2 per outer step (K lower
batches, then B_f and B_g). This re-creates each run's streams exactly as `zofo train` does (same data
sampling, seeds and tokenizer; `Run.load_data`, `Run.batches`), draws as many batches as the run's steps
took, and reports the widest static shape and the most tokens (rows x width) in one forward. No model runs.
Writes batch_shapes.json and batch_shapes.md under --out (with peak memory per run, from its result.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from zofo.api import load_config
from zofo.evaluation.static import to_static
from zofo.models.load import load_model
from zofo.run.recipe import Run


def draws(method: str, steps: int, lower_steps: int) -> dict[str, int]:
    """Batches drawn from each stream in `steps` steps of `method` (the order within a step does not matter:
    each stream has its own seed)."""
    if method == "bilevel-zofo":
        return {"lower": steps * (lower_steps + 1), "upper": steps}
    return {"train": steps}


def graph_keys(cfg, shapes: dict[str, list[tuple]]) -> set[tuple]:
    """The CUDA graphs a run captured (one per step kind and batch shape): FO-PEFT and MeZO one per training
    batch shape; Bilevel ZOFO one per lower batch shape, plus one p-step and one probe graph per (B_f, B_g)."""
    if cfg.train.method != "bilevel-zofo":
        return {("train", s) for s in shapes["train"]}
    k = cfg.bilevel.lower_steps
    lower = shapes["lower"]
    g_of_step = lower[k::k + 1]  # per outer step: K lower batches, then B_g (drawn after B_f from the same stream)
    lower_only = [s for i, s in enumerate(lower) if i % (k + 1) != k]
    return ({("lower", s) for s in lower_only} | {(kind, f, g) for f, g in zip(shapes["upper"], g_of_step, strict=True)
                                                  for kind in ("p-step", "probe")})


def run_config(run_dir: Path, data_root: Path, model: str):
    """The run's config, its data read from `data_root` and its tokenizer from `model` (the run's paths were the
    GPU machine's)."""
    cfg = load_config(str(run_dir / "config.yaml"), [f"model.name={model}", "model.device=cpu"])
    data = Path(cfg.data.data)
    parts = data.parts
    cfg.data.data = str(data_root.joinpath(*parts[parts.index("data") + 1:]) if "data" in parts else data_root / data)
    return cfg


def widest_batches(run_dir: Path, data_root: Path, model: str, tokenizer) -> dict:
    result = json.loads((run_dir / "result.json").read_text())
    cfg = run_config(run_dir, data_root, model)
    run = Run(cfg)
    splits, _ = run.load_data()
    batches = run.batches(splits, tokenizer)
    shapes = {stream: [to_static(batches.encode(batches.examples(stream))).shape for _ in range(n)]
              for stream, n in draws(cfg.train.method, result["steps"], cfg.bilevel.lower_steps).items()}
    every = [shape for drawn in shapes.values() for shape in drawn]
    widths = [shape[2] for shape in every]
    tokens = [shape[0] * shape[1] * shape[2] for shape in every]
    return {"run": run_dir.name, "method": cfg.train.method, "steps": result["steps"], "batches": len(widths),
            "widest": max(widths), "most_tokens": max(tokens),
            "at_widest": sum(w == max(widths) for w in widths), "graphs": len(graph_keys(cfg, shapes)),
            "peak_train_step_mib": result.get("peak_memory_mib", {}).get("train_step")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="study run folders (each holds run folders)")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", default="smollm2-135m", help="where the tokenizer comes from")
    parser.add_argument("--only", nargs="+", default=None, help="run names containing one of these strings")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    _, tokenizer = load_model(args.model)
    folders = sorted(r.parent for out in args.runs for r in out.glob("*/result.json")
                     if not args.only or any(s in r.parent.name for s in args.only))
    rows = [widest_batches(f, args.data_root, args.model, tokenizer) for f in tqdm(folders, desc="runs")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch_shapes.json").write_text(json.dumps(rows, indent=1))
    lines = ["| run | steps | batches drawn | widest (tokens) | batches at it | most tokens in one batch | "
             "graphs captured | peak train-step MiB |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['steps']} | {r['batches']} | {r['widest']} | {r['at_widest']} | {r['most_tokens']} | "
              f"{r['graphs']} | {r['peak_train_step_mib']:.0f} |" for r in rows]
    (args.out / "batch_shapes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
