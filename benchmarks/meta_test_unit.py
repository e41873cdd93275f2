"""What a meta-test unit (one task, one seed) costs, with and without each example's prompt shared across its
candidates, and with whole k-shot batches (graphed) against pieces of at most 64 rows (eager).

    PYTHONPATH=src python benchmarks/meta_test_unit.py MODEL TASK_FOLDER... [--n-test 100] [--out FILE.json] \
        [--profile DIR] [--python-profile FILE] [--profile-variant NAME]

Per task, seed 0 of the meta-test protocol (`zofo.meta.protocol.MetaTestProtocol`: 16 shots, 16 dev, 100 LoRA
steps), three variants, each alone on the device and timed piece by piece (device events around each piece on
CUDA, after one warm-up unit of the first task that is not reported):
- `whole, shared`: the protocol's default (k-shot batches whole, on the graphed static path, which never shares;
  zero-shot and ICL scoring share where `sharing_pays`);
- `rows 64, shared`: `meta-test --max-rows 64` (k-shot batches in eager pieces of at most 64 rows, shared too);
- `rows 64, not shared`: the same with sharing switched off (`SHARE_MIN_TOKENS` set out of reach).
The pieces are the unit's own (`zofo.meta.metatest`): zero-shot and ICL scoring of the test examples, then the
k-shot LoRA run (its training, dev evaluations and its test evaluation). Accuracies are printed beside the times:
sharing changes float rounding only, so they should agree to an example or two. Writes the figures as JSON
(after every unit). With `--profile DIR`, after the timed units, one more k-shot LoRA run (first task, seed 0, the
variant `--profile-variant`, by default the eager "rows 64, shared"; not reported) runs under torch.profiler, its
parts labelled (`kshot start`, `kshot train step`, `kshot dev eval`, `kshot test eval`, ...: `KSHOT_LABELS`): DIR gets
kshot_key_averages.txt (torch's op table, by device time on CUDA) and kshot_top_ops.json (its top ops as numbers),
written by `benchmarks/profiling.py`. With `--python-profile FILE`, one more such run under cProfile: FILE gets its
Python functions by own and by cumulative time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from zofo.evaluation import evaluate, icl_demonstrations, scoring
from zofo.meta.metatest import _Runner
from zofo.meta.pool import resolve
from zofo.meta.protocol import MetaTestProtocol
from zofo.methods import METHODS
from zofo.models.device import resolve_device
from zofo.models.load import load_model
from zofo.run import loop, recipe
from zofo.run.interrupt import StopRequest
from zofo.tasks import sample_splits

try:  # imported as benchmarks.meta_test_unit (the tests, PYTHONPATH=.)
    from benchmarks.profiling import labelled, profiled, write_profile, write_python_profile
except ModuleNotFoundError:  # run as a script: benchmarks/ is on the path
    from profiling import labelled, profiled, write_profile, write_python_profile

VARIANTS = {"whole, shared": (None, True), "rows 64, shared": (64, True), "rows 64, not shared": (64, False)}
# the parts of a k-shot LoRA run (`zofo.run.recipe.Run.execute`) that a profiled run shows as labelled ranges
KSHOT_LABELS = ((recipe.Run, "start", "kshot start"),              # data, model load, LoRA attached
                (recipe.Run, "train", "kshot train loop"),         # steps, dev evaluations, checkpoint
                (METHODS.get("fo-peft"), "step", "kshot train step"),
                (loop, "_evaluate", "kshot dev eval"),             # its best/ save included
                (loop, "save_best", "kshot save best"),
                (loop, "_save_checkpoint", "kshot checkpoint"),
                (recipe.Run, "finish", "kshot finish"),            # final/ saved, best/ loaded, test evaluation
                (recipe.Evaluator, "test", "kshot test eval"))


@contextmanager
def sharing(shared: bool) -> Iterator[None]:
    """Prompt sharing as the scoring code decides (True), or never (the threshold out of reach); put back after."""
    share_min = scoring.SHARE_MIN_TOKENS
    scoring.SHARE_MIN_TOKENS = share_min if shared else 1 << 62
    try:
        yield
    finally:
        scoring.SHARE_MIN_TOKENS = share_min


def timed(device: str, work: Callable[[], dict]) -> tuple[dict, float]:
    """(work's result, its seconds): device events on CUDA, the host clock elsewhere."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        result = work()
        end.record()
        torch.cuda.synchronize()
        return result, start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    return work(), time.perf_counter() - begin


def unit(model: str, folder: Path, protocol: MetaTestProtocol, n_test: int, device: str, dtype: str,
         out_dir: Path) -> dict:
    """One unit's three pieces, each timed: zero-shot, ICL, the k-shot LoRA run."""
    ref = resolve(str(folder), folder.parent, "argument")[0]
    task = ref.load()
    splits = sample_splits(task, n_train=protocol.shots, n_dev=protocol.n_dev, n_test=n_test, seed=0)
    runner = _Runner(model, protocol, out_dir, device, dtype)
    loaded, tokenizer = load_model(model, dtype=dtype, device=device)
    scored = {"batch_size": protocol.eval_batch_size, "max_tokens": protocol.eval_max_tokens, "progress": False}
    demos = icl_demonstrations(splits.train, protocol.shots, 0)
    zero, zero_s = timed(device, lambda: evaluate(loaded, tokenizer, task, splits.test, **scored))
    icl, icl_s = timed(device, lambda: evaluate(loaded, tokenizer, task, splits.test, demonstrations=demos, **scored))
    peft, peft_s = timed(device, lambda: runner.kshot_peft(ref, 0, n_test, StopRequest()))
    return {"seconds": {"zero-shot": zero_s, "ICL": icl_s, "k-shot LoRA": peft_s},
            "train_seconds": peft["train_seconds"],
            "accuracy": {"zero-shot": zero["accuracy"], "ICL": icl["accuracy"],
                         "k-shot LoRA": peft["test"]["accuracy"]}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a name zofo loads, or a model folder")
    parser.add_argument("tasks", nargs="+", type=Path, help="BIG-bench task folders")
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--steps", type=int, default=MetaTestProtocol.steps, help="k-shot LoRA steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="profile one more k-shot LoRA run, write here")
    parser.add_argument("--python-profile", type=Path, metavar="FILE",
                        help="one more k-shot LoRA run under cProfile, its Python functions by time written here")
    parser.add_argument("--profile-variant", choices=list(VARIANTS), default="rows 64, shared",
                        help="the eager variant by default: its kernels show one by one, a graph replay as one launch")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    report = {"model": args.model, "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
              "dtype": args.dtype, "n_test": args.n_test, "steps": args.steps, "tasks": {}}
    with tempfile.TemporaryDirectory() as scratch:
        warm = MetaTestProtocol(steps=min(args.steps, 10))
        unit(args.model, args.tasks[0], warm, min(args.n_test, 32), device, args.dtype, Path(scratch) / "warm-up")
        for folder in args.tasks:
            report["tasks"][folder.name] = {}
            for name, (max_rows, shared) in VARIANTS.items():
                protocol = MetaTestProtocol(steps=args.steps, max_rows=max_rows)
                with sharing(shared):
                    got = unit(args.model, folder, protocol, args.n_test, device, args.dtype, Path(scratch) / name)
                report["tasks"][folder.name][name] = got
                if args.out:  # after every unit: a benchmark stopped by a time limit keeps what it measured
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(report, indent=1) + "\n")
                print(f"{folder.name} | {name} | " + " | ".join(f"{k} {s:.1f} s" for k, s in got["seconds"].items())
                      + " | accuracy " + " ".join(f"{a:.3f}" for a in got["accuracy"].values()), flush=True)
        if args.profile:
            profile_kshot(args, device, Path(scratch) / "profiled")
        if args.python_profile:
            runner, ref, shared = profiled_run(args, device, Path(scratch) / "cprofiled")
            with sharing(shared):
                write_python_profile(lambda: runner.kshot_peft(ref, 0, args.n_test, StopRequest()), args.python_profile)
    return report


def profiled_run(args: argparse.Namespace, device: str, out_dir: Path) -> tuple[_Runner, object, bool]:
    """The runner, the task and the prompt sharing of the profiled k-shot run: the first task, variant
    ``args.profile_variant``."""
    max_rows, shared = VARIANTS[args.profile_variant]
    protocol = MetaTestProtocol(steps=args.steps, max_rows=max_rows)
    ref = resolve(str(args.tasks[0]), args.tasks[0].parent, "argument")[0]
    return _Runner(args.model, protocol, out_dir, device, args.dtype), ref, shared


def profile_kshot(args: argparse.Namespace, device: str, out_dir: Path) -> None:
    """The first task's k-shot LoRA run (seed 0) in variant ``args.profile_variant`` under torch.profiler, its
    parts labelled (KSHOT_LABELS); the op tables go to ``args.profile``."""
    runner, ref, shared = profiled_run(args, device, out_dir)
    cuda = device.startswith("cuda")
    with sharing(shared), ExitStack() as labels:
        for owner, attribute, label in KSHOT_LABELS:
            labels.enter_context(labelled(owner, attribute, label))
        with profiled(cuda) as prof:
            runner.kshot_peft(ref, 0, args.n_test, StopRequest())
    write_profile(prof, args.profile, "kshot_", cuda)


if __name__ == "__main__":
    main()
