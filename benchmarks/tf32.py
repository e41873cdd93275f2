"""What `--dtype tf32` changes: float32 weights with TF32 matmuls, against exact float32, both against float64.

    PYTHONPATH=src python benchmarks/tf32.py MODEL_DIR TASK_FOLDER [--out FILE.json]

On the real model and a real task's text (BIG-bench folder: each example's prompt followed by its correct answer,
batches of 16 rows, next-token cross-entropy over the non-padding tokens), for each precision of the float32 matmuls
(torch's "highest" = exact float32, "high" = TF32) and for a float64 copy of the model as the reference:
- the batch loss;
- the ZO projected gradient c = (L(theta + eps u) - L(theta - eps u)) / (2 eps), eps 1e-3, for 8 directions u
  (one normal draw per weight, the same u in every precision; the weights restored from a copy after each probe);
- the FO gradient of the whole backbone (cosine and relative error against float64);
- the time of one forward + backward, CUDA events after 3 warm-ups, median of 10, as a ratio to exact float32.
Needs CUDA. Prints a markdown table and writes the figures as JSON. Results: benchmarks/results/gpu-2026-12-06/tf32/.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from zofo.models.load import load_model
from zofo.tasks.bigbench import bigbench_format, read_bigbench

ROWS, BATCHES, DIRECTIONS, EPS = 16, 4, 8, 1e-3
PRECISIONS = {"float32": "highest", "tf32": "high"}


def batches(tokenizer, task: Path, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """BATCHES batches of ROWS texts (prompt and correct answer), right-padded, on the GPU."""
    _, pools, _ = read_bigbench(task)
    records = [r for pool in pools.values() for r in pool][: ROWS * BATCHES]
    texts = [(e.prompt + e.candidates[e.label]) for e in map(bigbench_format, records)]
    out = []
    for i in range(0, len(texts), ROWS):
        enc = tokenizer(texts[i:i + ROWS], return_tensors="pt", padding=True, truncation=True, max_length=256)
        out.append((enc["input_ids"].to(device), enc["attention_mask"].to(device)))
    return out


def loss(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    keep = mask[:, 1:].bool()
    return torch.nn.functional.cross_entropy(logits[keep].double(), ids[:, 1:][keep])


def directions(model, seed: int) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(p.shape, generator=g, device=device, dtype=torch.float32) for p in model.parameters()]


@torch.no_grad()
def zo_estimates(model, data) -> list[float]:
    """c for each direction, on batch d % BATCHES (the weights restored from a copy, never by subtraction)."""
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    out = []
    for d in range(DIRECTIONS):
        u = directions(model, d)
        ids, mask = data[d % len(data)]
        values = []
        for sign in (1, -1):
            for p, s, z in zip(params, saved, u, strict=True):
                p.copy_(s + sign * EPS * z.to(p.dtype))
            values.append(loss(model, ids, mask).item())
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
        out.append((values[0] - values[1]) / (2 * EPS))
    return out


def gradient(model, data) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    for ids, mask in data:
        loss(model, ids, mask).backward()
    return torch.cat([p.grad.double().flatten() for p in model.parameters()])


def step_ms(model, ids, mask) -> float | None:
    if ids.device.type != "cuda":
        return None
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss(model, ids, mask).backward()
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end))
    model.zero_grad(set_to_none=True)
    return statistics.median(times)


def measure(model, data) -> dict:
    with torch.no_grad():
        losses = [loss(model, ids, mask).item() for ids, mask in data]
    return {"loss": statistics.fmean(losses), "c": zo_estimates(model, data), "grad": gradient(model, data)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("task", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", default="cuda", help="cpu checks the code only (no timing; no TF32 there)")
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model, dtype="float32", device=args.device)
    data = batches(tokenizer, args.task, args.device)
    found, times = {}, {}
    for name, precision in PRECISIONS.items():
        torch.set_float32_matmul_precision(precision)
        found[name] = measure(model, data)
        times[name] = step_ms(model, *data[0])
    reference = measure(model.double(), data)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    report = {"device": device, "torch": torch.__version__, "task": str(args.task),
              "loss_float64": reference["loss"], "c_float64": reference["c"]}
    print(f"{report['device']}, {args.task.name}, {BATCHES} batches of {ROWS} rows\n")
    print("| matmuls | loss - float64 | c: max abs error (c's own scale) | gradient cosine to float64 | gradient "
          "relative error | forward+backward ms | speed-up |\n|---|---|---|---|---|---|---|")
    scale = max(abs(c) for c in reference["c"])
    for name, got in found.items():
        c_error = max(abs(a - b) for a, b in zip(got["c"], reference["c"], strict=True))
        g, r = got["grad"], reference["grad"]
        cosine = (g @ r / (g.norm() * r.norm())).item()
        relative = ((g - r).norm() / r.norm()).item()
        report[name] = {"loss": got["loss"], "c": got["c"], "c_max_abs_error": c_error, "grad_cosine": cosine,
                        "grad_relative_error": relative, "step_ms": times[name],
                        "speedup": times["float32"] / times[name] if times[name] else None}
        speed = f"{times[name]:.1f} | {times['float32'] / times[name]:.2f}x" if times[name] else "- | -"
        print(f"| {name} | {got['loss'] - reference['loss']:.2e} | {c_error:.2e} ({scale:.2e}) | {cosine:.8f} | "
              f"{relative:.2e} | {speed} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
