"""Meta-testing: every held-out task on one backbone, zero-shot, with k demonstrations, and with a fresh k-shot
LoRA, over several seeds of the k-shot sample (`zofo.meta.protocol` states the protocol).

    report = meta_test(refs, "smollm2-135m", MetaTestProtocol(), Path("runs/meta-test"))

Nothing new trains here: the evaluations are `zofo.evaluation.evaluate` and the k-shot LoRA is an ordinary
`fo-peft` run (`zofo.run.recipe.Run`, what `zofo.api.train` runs), one per task and seed, in OUT/runs/.
Each finished (task, seed) is written to OUT/units/ at once (`zofo.meta.units`), so that a run stopped by Ctrl-C or
SIGTERM (after its current scoring batch or training step) continues when the same command runs again; the output
folder records the protocol and the backbone, and refuses results of another, and a folder that holds anything a
meta-test does not write (`OUT_ENTRIES`: a training run's folder, the user's files). `workers=N` runs the units in N
processes (`zofo.meta.workers`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from pathlib import Path

from tqdm.auto import tqdm

from zofo.errors import ZofoError
from zofo.evaluation import evaluate, icl_demonstrations
from zofo.meta.backbone import backbone_folder, describe_backbone
from zofo.meta.pool import TaskRef, load_checked
from zofo.meta.protocol import MetaTestProtocol
from zofo.meta.report import summarise, write_report
from zofo.meta.units import MetaTestInterrupted, finished, slug, unit_file, write_unit
from zofo.meta.workers import Share, run_workers, write_spec
from zofo.meta.workers import check as check_workers
from zofo.models.device import resolve_device
from zofo.models.load import load_model
from zofo.run.folder import listed
from zofo.run.interrupt import StopRequest, TrainingInterrupted, stop_on_signal
from zofo.run.lock import locked
from zofo.run.options import load_config
from zofo.run.recipe import Run
from zofo.stop import EvaluationStopped
from zofo.tasks import Task, sample_splits

#: everything a meta-test writes into its folder (`zofo.atomic.written_whole` adds backbone.partial / .old)
OUT_ENTRIES = frozenset({".lock", "protocol.json", "units", "runs", "workers", "meta_test.json", "meta_test.md",
                         "backbone", "backbone.partial", "backbone.old"})


def meta_test(refs: list[TaskRef], model: str, protocol: MetaTestProtocol, out_dir: Path, *,
              device: str = "auto", dtype: str = "float32", progress: bool = True, workers: int = 1,
              as_worker: bool = False) -> dict | None:
    """Meta-test every task of `refs` on the backbone `model` (a name, folder or run folder); returns the report
    (also written as OUT/meta_test.json and OUT/meta_test.md). Every task is loaded and sized before any runs.
    `workers` > 1 runs the units in that many processes (`zofo.meta.workers`); `as_worker` is one of them: it takes
    the units no other worker claimed and writes no report (returns None)."""
    protocol.check()
    check_workers(workers, as_worker)
    _refuse_repeats(refs)
    tasks = {ref: load_checked(ref) for ref in refs}
    n_test = {ref: test_size(tasks[ref], ref, protocol) for ref in refs}
    out_dir = Path(out_dir)
    if not as_worker:
        check_out_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a worker works under its parent's lock (an inherited descriptor), so it takes none
    with contextlib.nullcontext() if as_worker else locked(out_dir) as lock:
        described = describe_backbone(model, out_dir)
        header = {"protocol": protocol.to_dict(), "backbone": described, "dtype": dtype}
        _claim(out_dir, header, write=not as_worker)  # the workers' parent wrote it, and they only read it
        backbone = backbone_folder(model, out_dir, described)  # after the claim: a refused folder keeps its own
        units = [(ref, seed) for seed in protocol.seeds for ref in refs]  # a stopped one has whole seeds first
        if workers > 1:
            spec = write_spec(out_dir, refs, model, protocol, dtype)
            run_workers(spec, workers, device, [(unit_file(out_dir, ref, seed), ref) for ref, seed in units],
                        progress, lock)
        else:
            runner = _Runner(backbone, protocol, out_dir, resolve_device(device), dtype)
            kept = "keeping the finished task-seed units (the current one starts again next time)"
            with stop_on_signal(kept) as stop:
                _run_units(units, tasks, n_test, runner, stop, progress, Share(out_dir) if as_worker else None)
        if as_worker:
            return None
        results = [json.loads(unit_file(out_dir, ref, seed).read_text()) for ref, seed in units]
        report = summarise(results, [ref.name for ref in refs], header)
        write_report(report, out_dir)
    return report


def _run_units(units: list[tuple[TaskRef, int]], tasks: dict[TaskRef, Task], n_test: dict[TaskRef, int],
               runner: _Runner, stop: StopRequest, progress: bool, share: Share | None = None) -> None:
    """Every (task, seed) not finished yet (and, for a worker, claimed by it: `share`), each written to OUT/units/
    when done; a signal (or, for a worker, its parent's stop file) stops the work after the current evaluation or
    training step (`MetaTestInterrupted`)."""
    out_dir = runner.out_dir
    bar = tqdm(total=len(units), disable=not progress, desc="meta-test", dynamic_ncols=True)
    for done, (ref, seed) in enumerate(units):
        file = unit_file(out_dir, ref, seed)
        todo = not finished(file, ref)
        if todo and share is not None:
            if signum := share.stop_signal():
                bar.close()  # the parent's signal came before this worker could catch it
                raise MetaTestInterrupted(done, len(units), out_dir, signum)
            todo = share.claim(ref, seed)
        if todo:
            bar.set_postfix_str(f"{ref.name} seed {seed}")
            try:
                result = runner.unit(ref, tasks[ref], seed, n_test[ref], stop)
            except (TrainingInterrupted, EvaluationStopped) as err:  # the unfinished unit is dropped
                bar.close()
                # the signal: ours, else the one a training loop stopped on (another rank's, under torchrun)
                signum = stop.signal or getattr(err, "signum", None) or signal.SIGTERM
                raise MetaTestInterrupted(done, len(units), out_dir, signum) from err
            write_unit(file, result)
        bar.update(1)
        if stop.requested and done + 1 < len(units):
            bar.close()
            raise MetaTestInterrupted(done + 1, len(units), out_dir, stop.signal)
    bar.close()


def test_size(task: Task, ref: TaskRef, protocol: MetaTestProtocol) -> int:
    """Test examples per seed: n_test, or what the task has left after the k-shot sample and dev."""
    total = sum(len(task.records(split)) for split in ("train", "dev", "test"))
    left = total - protocol.shots - protocol.n_dev
    if left < 1:
        raise ZofoError(f"{ref.where}: task {ref.name} has {total} examples, too few for {protocol.shots} shots, "
                        f"{protocol.n_dev} dev and a test set", "give more data, or fewer --shots / --n-dev")
    return min(protocol.n_test, left)


def check_out_folder(out_dir: Path) -> None:
    """Refuse an output folder that holds anything a meta-test does not write: results would mix with a training
    run's files or the user's (a folder of this meta-test, or of another, is `_claim`'s to judge)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ZofoError(f"--out {out_dir} is a file", "give a folder: absent, empty or an earlier meta-test's")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUT_ENTRIES) if out_dir.is_dir() else []
    if foreign:
        raise ZofoError(f"--out {out_dir} holds files a meta-test does not write ({listed(foreign)})",
                        "give an absent or empty folder, or an earlier meta-test's to continue it")


def _refuse_repeats(refs: list[TaskRef]) -> None:
    seen: dict[str, TaskRef] = {}
    for ref in refs:
        first = seen.setdefault(ref.name, ref)
        if first is not ref:
            what = "is named twice" if first.key == ref.key else "names two different tasks"
            raise ZofoError(f"{ref.where}: task {ref.name} {what} (first at {first.where})",
                            "give each task once, under a distinct folder name")


def _claim(out_dir: Path, header: dict, write: bool = True) -> None:
    """Record the protocol and backbone in OUT/protocol.json (unless not `write`); refuse a folder that holds
    another's results (a folder without any finished unit holds none: its header is replaced)."""
    file = out_dir / "protocol.json"
    if file.is_file() and any((out_dir / "units").rglob("*.json")):
        before = json.loads(file.read_text())
        if before != json.loads(json.dumps(header)):
            changed = sorted(k for k in header if before.get(k) != json.loads(json.dumps(header[k])))
            raise ZofoError(f"{out_dir} holds meta-test results of another {' and '.join(changed)} ({file})",
                            "give another --out, or the same settings to continue those results")
    if write:
        file.write_text(json.dumps(header, indent=1) + "\n")


class _Runner:
    """The three settings of one (task, seed): the evaluation model is loaded once, the k-shot runs each load
    their own."""

    def __init__(self, backbone: str, protocol: MetaTestProtocol, out_dir: Path, device: str, dtype: str):
        self.backbone, self.protocol, self.out_dir, self.device, self.dtype = backbone, protocol, out_dir, device, dtype
        self.loaded = None

    def unit(self, ref: TaskRef, task: Task, seed: int, n_test: int, stop: StopRequest) -> dict:
        p = self.protocol
        splits = sample_splits(task, n_train=p.shots, n_dev=p.n_dev, n_test=n_test, seed=seed)
        if self.loaded is None:
            self.loaded = load_model(self.backbone, dtype=self.dtype, device=self.device)
        model, tokenizer = self.loaded
        demos = icl_demonstrations(splits.train, p.shots, seed)
        scoring = {"batch_size": p.eval_batch_size, "max_tokens": p.eval_max_tokens}
        # a stop ends the scoring between two batches (`EvaluationStopped`), not after the whole test set
        zero = evaluate(model, tokenizer, task, splits.test, progress=False, stop=stop, **scoring)
        icl = evaluate(model, tokenizer, task, splits.test, demonstrations=demos, progress=False, stop=stop, **scoring)
        peft = self.kshot_peft(ref, seed, n_test, stop)
        return {"task": ref.name, "data": ref.data, "template": ref.template, "seed": seed,
                "protocol": splits.protocol, "bounds": p.bounds(),
                "sizes": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test)},
                "zero_shot": zero, "icl": icl, "peft": peft["test"],
                "peft_run": {"best_dev": peft["best_dev"], "best_step": peft["best_step"],
                             "steps": peft["steps"], "train_seconds": peft["train_seconds"],
                             "run_dir": peft["run_dir"]}}

    def kshot_peft(self, ref: TaskRef, seed: int, n_test: int, stop: StopRequest) -> dict:
        """A fresh LoRA on the k-shot sample: the ordinary fo-peft run with the protocol's settings."""
        run_dir = self.out_dir / "runs" / slug(ref.name) / f"seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a run cut short by a signal starts again from its beginning
        overrides = [f"model.name={self.backbone}", f"model.dtype={self.dtype}", f"model.device={self.device}",
                     f"data.task={ref.task}", f"data.n_test={n_test}", f"data.seed={seed}", f"train.seed={seed}",
                     f"train.output_dir={run_dir}", *self.protocol.run_overrides()]
        overrides += [f"data.data={ref.data}"] if ref.data is not None else []
        overrides += [f"data.template={ref.template}"] if ref.template is not None else []
        return Run(load_config(None, overrides), stop=stop).execute()
