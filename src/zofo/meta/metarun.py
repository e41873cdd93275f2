"""One meta-training run, assembled: split file -> per-task data -> model with the z / p adapters -> per-task
blocks -> `MetaBilevel` on THE training loop (`zofo.run.loop.train_loop`) -> the backbone saved for meta-test.

    result = meta_train(MetaTrainConfig(split="configs/meta/bigbench_split.yaml", model="smollm2-135m",
                                        out="runs/meta-zofo"))

The run folder (what `zofo meta-test --model RUN`, `zofo eval --model RUN/backbone` and
`zofo train --model RUN/backbone` read):
    meta.json                  every option of the run (a resumed run reads them back) and its task list
    config.yaml                the model section and the single-task method it extends (what loaders read)
    log.jsonl, checkpoint/     the loop's log; theta as its seed trajectory, every task block and Adam state
    best/                      the backbone that scored best on dev so far (trajectory form)
    final/backbone.safetensors the meta-trained backbone (last step), plain safetensors by parameter name
    final/trajectory.json      the same backbone as its seed trajectory (`zofo replay RUN` rebuilds it)
    backbone/                  a plain model folder (config.json, model.safetensors, tokenizer)
    result.json                steps, time, work, dev accuracy before and after, peak memory (CUDA)

Dev: `n_dev` examples per meta-train task held out from both levels; the backbone alone (adapters disabled) is
scored zero-shot and the mean accuracy over tasks is logged (before training, every `eval_every` steps, at the end).

Under torchrun (`torchrun --nproc-per-node N zofo meta-train ...`, the flags of one process) every rank holds the
whole model and takes batch_size / N examples of each task's batch (`zofo.meta.metatrain` says what is averaged);
the ranks must resolve the same options and N must divide batch_size (checked at start, as for `zofo train`).
Each task's dev examples are split across the ranks and the predictions gathered, so the dev accuracy is computed
over every example, as in one process. Rank 0 alone writes the run folder; every rank resumes from its checkpoint.
"""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from dataclasses import asdict, fields
from pathlib import Path

import torch
from tqdm import tqdm

from zofo.atomic import restored, written_whole
from zofo.config import save_config
from zofo.errors import ZofoError
from zofo.evaluation import encode_candidates, evaluate
from zofo.meta.backbone import resolve_backbone
from zofo.meta.metatrain import MetaBilevel, TaskStreams
from zofo.meta.multitask import run_baseline
from zofo.meta.options import BASELINES, BILEVEL, RESUME_MAY_CHANGE, MetaTrainConfig
from zofo.meta.split import Split, meta_train_data, read_split
from zofo.models.adapters import attach_adapters, peft_config
from zofo.models.device import resolve_device
from zofo.models.load import check_device_dtype, load_model, resolve_dtype, resolve_source
from zofo.ranks import Ranks
from zofo.run.checkpoint import save_weights
from zofo.run.distributed import check_batch_divides, check_same_values, launched_world, rank_device, start_group
from zofo.run.folder import check_goes_on
from zofo.run.interrupt import TrainingInterrupted, stop_on_signal
from zofo.run.lock import locked
from zofo.run.logs import PeakMemory, RunLogger
from zofo.run.loop import LoopSettings, LoopState, resume, train_loop


def resumed(run_dir: str | Path, **changes) -> MetaTrainConfig:
    """The options of the run in `run_dir` (its meta.json), with the few a resumed run may change; its folder is
    `run_dir` as given (from any current folder)."""
    path = Path(run_dir) / "meta.json"
    if not path.is_file():
        raise ZofoError(f"{run_dir} is not a meta-training run folder (no meta.json)",
                        "give the --out of a meta-train run")
    saved = json.loads(path.read_text())["options"]
    refused = sorted(k for k, v in changes.items() if v is not None and k not in RESUME_MAY_CHANGE and v != saved[k])
    if refused:
        raise ZofoError(f"a resumed run keeps its options; {refused[0]} differs from the run's", "drop it, or start a "
                        f"new run (a resumed run may change {', '.join(RESUME_MAY_CHANGE)})")
    known = {f.name for f in fields(MetaTrainConfig)}
    kept = {k: v for k, v in changes.items() if v is not None and k in RESUME_MAY_CHANGE}
    cfg = MetaTrainConfig(**({k: v for k, v in saved.items() if k in known} | kept | {"out": str(run_dir)}))
    check_goes_on(Path(run_dir) / "checkpoint", cfg.steps, f"--resume {run_dir}", "--steps", "evaluate")
    return cfg


def meta_train(cfg: MetaTrainConfig, resume_run: bool = False, split: Split | None = None) -> dict:
    """Meta-train as `cfg` says (bilevel methods on the per-task blocks; baselines on the pooled tasks); with
    `resume_run`, continue the run in cfg.out from its checkpoint. `split`: what `checked_split` returned, if the
    caller checked already. Returns result.json's content."""
    split = split or checked_split(cfg, resume_run)
    device = torch.device(rank_device(resolve_device(cfg.device)))
    ranks = join_meta(cfg, device)  # every rank checked the folder before rank 0 writes meta.json in it
    run_dir = Path(cfg.out)
    data = meta_train_data(split, cfg.upper, cfg.lower, seed=cfg.seed, n_dev=cfg.n_dev)
    if ranks.writes:
        run_dir.mkdir(parents=True, exist_ok=True)
    with locked(run_dir, "meta-train") if ranks.writes else nullcontext():
        started = resume_run and (restored(run_dir / "checkpoint") / "loop.json").is_file()
        if ranks.writes:
            if resume_run and not started:  # stopped before its first checkpoint: again from step 0
                _clear_attempt(run_dir)
            options = asdict(cfg) | {k: _absolute(getattr(cfg, k)) for k in ("split", "bigbench_root")}
            (run_dir / "meta.json").write_text(json.dumps({"options": options, "tasks": [d.name for d in data]},
                                                          indent=1))
        try:
            if cfg.method in BASELINES:  # `Run` joins the ranks itself
                return run_baseline(cfg, split, data, started)
            return MetaRun(cfg, split, data, device, ranks).execute(started)
        except TrainingInterrupted as err:  # continued by this command, not by `zofo train`
            raise TrainingInterrupted(err.step, err.checkpoint, err.signum,
                                      resume=f"zofo meta-train --resume {run_dir}") from None


def _clear_attempt(run_dir: Path) -> None:
    """What an attempt that never reached its first checkpoint left (a log, TensorBoard events, a best/ folder, the
    config), so that starting again from step 0 reads none of it back."""
    for name in ("log.jsonl", "config.yaml", "result.json"):
        (run_dir / name).unlink(missing_ok=True)
    for name in ("tensorboard", "best", "best.partial", "best.old", "checkpoint.partial", "checkpoint.old"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _absolute(path: str | None) -> str | None:
    """A path as meta.json keeps it: absolute, so that `--resume` works from any current folder."""
    return None if path is None else str(Path(path).expanduser().resolve())


def join_meta(cfg: MetaTrainConfig, device: torch.device) -> Ranks:
    """One process unless launched by torchrun with WORLD_SIZE > 1; then the process group, with the launch checked:
    every rank resolved rank 0's options, and the ranks divide the batch."""
    if launched_world() <= 1:
        return Ranks()
    ranks = start_group(device)
    check_same_values(asdict(cfg), ranks)
    check_batch_divides(cfg.batch_size, ranks, "batch_size")
    return ranks


def checked_split(cfg: MetaTrainConfig, resume_run: bool = False) -> Split:
    """Everything refused before anything loads (the options, the output folder, the model's name, the split
    file and its tasks); returns the split."""
    cfg.check()
    if not cfg.out:
        raise ZofoError("meta-train needs an output folder", "give --out RUN")
    if not resume_run and (Path(cfg.out) / "meta.json").exists():
        if (restored(Path(cfg.out) / "checkpoint") / "loop.json").is_file():
            raise ZofoError(f"{cfg.out} already holds a meta-training run",
                            "resume it with --resume, or choose another --out")
        raise ZofoError(f"{cfg.out} holds a meta-training run that stopped before its first checkpoint",
                        f"start it again from step 0 with --resume {cfg.out} (its own options), or choose another "
                        "--out")
    out = Path(cfg.out)
    if not resume_run and out.is_dir() and not (out / "meta.json").exists() and any(out.iterdir()):
        raise ZofoError(f"{cfg.out} is not empty and holds no meta-training run (no meta.json)",
                        "give a new or empty --out")
    check_device_dtype(resolve_device(cfg.device), resolve_dtype(cfg.dtype), computes=False)
    resolve_source(cfg.model)  # a wrong model fails before any data is read
    split = read_split(cfg.split, cfg.bigbench_root, lists=("meta_train",))
    if cfg.method in BILEVEL and cfg.tasks_per_step > len(split.meta_train):
        raise ZofoError(f"--tasks-per-step {cfg.tasks_per_step} with {len(split.meta_train)} meta-train tasks in "
                        f"{cfg.split}", "choose a T no larger than the number of meta-train tasks")
    return split


class MetaRun:
    """The bilevel meta-training run: model, blocks and method built once, then the loop, then the saving."""

    def __init__(self, cfg: MetaTrainConfig, split, data, device: torch.device, ranks: Ranks | None = None):
        self.cfg, self.data, self.run_dir = cfg, data, Path(cfg.out)
        self.tasks = {ref.name: split.task(ref) for ref in split.meta_train}
        self.device, self.ranks = device, ranks or Ranks()

    def build(self) -> MetaBilevel:
        cfg = self.cfg
        model, self.tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=str(self.device))
        torch.manual_seed(cfg.seed)  # start-up only: the PEFT modules' initial values
        config = peft_config(cfg.peft, r=cfg.r, alpha=cfg.alpha, num_virtual_tokens=cfg.num_virtual_tokens)
        model, groups = attach_adapters(model, config, MetaBilevel.adapter_names)
        model.to(self.device)
        if self.ranks.writes:
            save_config(cfg.run_config(), self.run_dir / "config.yaml")

        def encode(examples):
            return encode_candidates(self.tokenizer, examples, cfg.max_length).to(self.device)

        share = self.ranks.share if self.ranks.parallel else None  # every rank draws the batch, takes its share
        streams = TaskStreams(self.data, cfg.batch_size, cfg.seed, encode, share)
        return MetaBilevel(model, groups, streams, cfg.options(), self.ranks)

    def dev(self, model) -> dict:
        """Mean zero-shot accuracy of the deployed backbone over the meta-train tasks' dev examples (each task's
        split across the ranks, its predictions gathered)."""
        tasks = tqdm([d for d in self.data if d.dev], desc="dev", unit="task", leave=False,
                     disable=not (self.cfg.progress and self.ranks.writes))
        scores = [evaluate(model, self.tokenizer, self.tasks[d.name], d.dev, batch_size=self.cfg.eval_batch_size,
                           progress=False, ranks=self.ranks)["accuracy"] for d in tasks]
        return {"accuracy": sum(scores) / len(scores) if scores else float("nan"), "dev_tasks": len(scores)}

    def execute(self, resume_run: bool) -> dict:
        cfg, method = self.cfg, self.build()
        settings = LoopSettings(steps=cfg.steps, max_seconds=cfg.max_seconds, eval_every=cfg.eval_every,
                                log_every=cfg.log_every, save_every=cfg.save_every, metric="accuracy",
                                progress=cfg.progress and self.ranks.writes, ranks=self.ranks)
        logger, memory = RunLogger(self.run_dir, writes=self.ranks.writes), PeakMemory(self.device)
        state = resume(method, self.run_dir / "checkpoint", logger) if resume_run else LoopState()
        with stop_on_signal() as stop:
            state = train_loop(method, lambda: self.dev(method.model), self.run_dir, settings, logger, memory,
                               state, stop)
        return self.finish(method, state, logger, memory)

    def finish(self, method: MetaBilevel, state: LoopState, logger: RunLogger, memory: PeakMemory) -> dict:
        """final/, backbone/ and result.json, by rank 0; every rank returns rank 0's result."""
        result = self.save(method, state, logger, memory) if self.ranks.writes else None
        logger.close()
        return self.ranks.gather(result)[0]

    def save(self, method: MetaBilevel, state: LoopState, logger: RunLogger, memory: PeakMemory) -> dict:
        with written_whole(self.run_dir / "final") as final:
            save_weights(method.groups.backbone, final / "backbone.safetensors")
            if method.seed_trajectory() is not None:
                method.seed_trajectory().save(final / "trajectory.json")
        folder, _ = resolve_backbone(str(self.run_dir), self.run_dir, rewrite=True)  # RUN/backbone, a model folder
        result = self.result(method, state, logger, memory) | {"backbone_folder": folder}
        (self.run_dir / "result.json").write_text(json.dumps(result, indent=1, default=str))
        return result

    def result(self, method: MetaBilevel, state: LoopState, logger: RunLogger, memory: PeakMemory) -> dict:
        """result.json's content (the dev accuracies read back from the log, which a resumed run continues)."""
        dev = [json.loads(line) for line in (self.run_dir / "log.jsonl").read_text().splitlines()]
        dev = [r for r in dev if r["phase"] == "dev"]
        result = {"method": f"meta-{self.cfg.method}", "tasks": len(self.data), "steps": state.step,
                  "train_seconds": round(logger.elapsed(), 2),
                  "train_seconds_without_evaluation": round(logger.train_elapsed(), 2),
                  "work": {"forward_rows": state.forward_rows, "backward_rows": state.backward_rows},
                  "dev_first": dev[0]["accuracy"] if dev else None, "dev_last": dev[-1]["accuracy"] if dev else None,
                  "best_dev": state.best_metric, "best_step": state.best_step, "skipped_steps": state.skipped_steps,
                  "peak_memory_mib": memory.peaks, "peak_memory_reserved_mib": memory.reserved,
                  "block_host_mib": round(method.blocks.host_bytes() / 2**20, 3),
                  "run_dir": str(self.run_dir), "options": asdict(self.cfg)}
        if self.ranks.parallel:  # rank 0's count: every rank sends the same
            r = self.ranks
            result["ranks"] = {"world": r.world, "sent_bytes": r.sent_bytes, "collectives": r.collectives,
                               "control_bytes": r.control_bytes}
        return result
