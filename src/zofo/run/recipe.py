"""One training run assembled from a config: data, model, method, loop, final test evaluation, saving.

Launched by torchrun, each process is one rank of the run (`zofo.run.distributed`): the same data, model and seeds,
its share of every batch and of every evaluation, rank 0 alone writing the run folder.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

from zofo.atomic import written_whole
from zofo.config import save_config
from zofo.errors import UsageError
from zofo.evaluation import evaluate, icl_demonstrations
from zofo.evaluation.scoring import encode_candidates
from zofo.methods import Method, Settings
from zofo.models.adapters import ParamGroups, attach_adapters, backbone_params, peft_config, save_adapter
from zofo.models.device import resolve_device
from zofo.models.load import load_model, resolve_source
from zofo.ranks import Ranks
from zofo.run.checkpoint import save_weights
from zofo.run.distributed import join, launched_world, rank_device, shard_backbone, shared_run_dir
from zofo.run.folder import check_run_folder, clear_run_folder
from zofo.run.interrupt import StopRequest, TrainingInterrupted, stop_on_signal
from zofo.run.kept_weights import load_best
from zofo.run.lock import locked
from zofo.run.logs import PeakMemory, RunLogger
from zofo.run.loop import LoopSettings, LoopState, resume, train_loop
from zofo.run.options import RunConfig, method_class, method_options, peft_kind, run_dir_for
from zofo.tasks import load_task, sample_splits, split_bilevel
from zofo.tasks.streams import Batches, ExampleStream
from zofo.zo.shards import whole


def method_settings(cfg: RunConfig, ranks: Ranks | None = None) -> Settings:
    """The config's plain values that every method reads (methods never see the config object), and the ranks."""
    # a sharded backbone's forward all-gathers its layers: not captured into CUDA graphs
    return Settings(objective=cfg.data.objective, steps=cfg.train.steps, seed=cfg.train.seed,
                    cuda_graphs=cfg.train.cuda_graphs and not cfg.train.fsdp, max_rows=cfg.train.max_rows,
                    optim=cfg.optim, zo=cfg.zo, ranks=ranks or Ranks())


class Run:
    """Everything one `zofo train` does, in the order it does it.

    ``startup``: a lock held while the run starts (loading, seeding the PEFT modules' initial values), given
    when several runs share the process (`zofo.run.concurrent`); such runs record no peak memory, which torch
    counts per process. ``stop``: the stop request the runs of such a process share (else the run installs its
    own signal handlers while it trains). ``replace``: `--overwrite`, an old run in the folder is deleted once this
    one holds the folder's lock and has loaded its data and model.
    """

    def __init__(self, cfg: RunConfig, startup: AbstractContextManager | None = None,
                 stop: StopRequest | None = None, replace: bool = False):
        self.cfg, self.startup, self.stop, self.replace = cfg, startup, stop, replace
        self.device = torch.device(rank_device(resolve_device(cfg.model.device)))
        if startup is not None and launched_world() > 1:
            raise UsageError("runs trained together in one process do not run under torchrun",
                             "launch each run with torchrun on its own, or train them together without it")
        self.ranks = join(cfg, self.device)  # one process unless launched by torchrun
        self.method_cls: type[Method] = method_class(cfg)
        self.options = method_options(cfg, self.method_cls)
        self.peft_kind = peft_kind(cfg)
        run_dir = Path(cfg.train.resume).parent if cfg.train.resume else run_dir_for(cfg)
        self.run_dir = shared_run_dir(run_dir, self.ranks) if self.ranks.parallel else run_dir

    def execute(self) -> dict:
        with self.folder_lock():
            return self.locked_execute()

    @contextmanager
    def folder_lock(self) -> Iterator[None]:
        """RUN/.lock for the run's length (the writing rank's): a second run into the same folder (a shell loop
        whose runs got one time-stamped name) is refused instead of mixing its files with this one's. A new run
        checks the folder again once it holds the lock: another may have filled it since `prepared` looked."""
        if not self.ranks.writes:
            yield
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.run_dir, "zofo train"):
            if not self.cfg.train.resume:
                check_run_folder(self.run_dir, self.replace)
            yield

    def saved_config(self) -> RunConfig:
        """The run's settings as config.yaml keeps them: without `train.resume`, which was this command's, so that
        the file given back as --config starts a run rather than resuming this one."""
        saved = copy.deepcopy(self.cfg)
        saved.train.resume = None
        return saved

    def locked_execute(self) -> dict:
        with self.startup or nullcontext():
            method, evaluator = self.start()
        logger = RunLogger(self.run_dir, writes=self.ranks.writes)
        memory = PeakMemory(self.device, alone=self.startup is None)
        try:
            state = self.train(method, evaluator, logger, memory) if method.trains else LoopState()
        except TrainingInterrupted:
            logger.close()
            raise
        with logger.off_the_clock():  # a resumed run's clocks include the time before the interruption
            result = self.finish(method, evaluator, state, memory, logger.elapsed(), logger.train_elapsed())
            logger.log(state.step, "test", **{k: v for k, v in result["test"].items()})
        logger.close()
        return result

    def start(self) -> tuple[Method, Evaluator]:
        """Data, model, adapters, batches, the method and the evaluator; writes config.yaml."""
        resolve_source(self.cfg.model.name)  # a wrong model path fails before any data is read
        splits, task = self.load_data()
        pools = self.example_pools(splits)  # a split that leaves a level empty fails before the model loads
        model, tokenizer, groups = self.build_model()
        if self.ranks.writes:
            if self.replace:  # the inputs loaded: only now may the old run go
                clear_run_folder(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.saved_config(), self.run_dir / "config.yaml")
        batches = self.batches(pools, tokenizer)
        method = self.method_cls(model, groups, batches, method_settings(self.cfg, self.ranks), self.options)
        # a sharded model runs every forward on every rank in step: each evaluates every example
        split = None if self.cfg.train.fsdp else self.ranks
        evaluator = Evaluator(model, tokenizer, task, splits, self.cfg, method.demonstrations(), split,
                              progress=self.cfg.train.progress and self.ranks.writes)
        return method, evaluator

    def build_model(self) -> tuple[torch.nn.Module, object, ParamGroups]:
        """The model and tokenizer as configured, with the method's PEFT modules attached (their initial values
        drawn from the run's seed): what training starts from, and what `zofo replay` rebuilds."""
        sharded = self.cfg.train.fsdp and self.ranks.parallel  # loaded on the CPU: the device gets its shards only
        model, tokenizer = load_model(self.cfg.model.name, dtype=self.cfg.model.dtype,
                                      device="cpu" if sharded else str(self.device),
                                      trust_remote_code=self.cfg.model.trust_remote_code, staged=sharded)
        torch.manual_seed(self.cfg.train.seed)  # start-up only: the PEFT modules' initial values
        if sharded:  # before the groups are taken: FSDP replaces the parameters by sharded ones on the device
            model = shard_backbone(model, self.device, self.ranks).to(self.device)
        model, groups = self.attach(model)
        return model, tokenizer, groups

    def base_backbone(self) -> dict[str, torch.Tensor]:
        """The base model's backbone weights, loaded as the run loads them but on the CPU (no second copy on the
        device), by the names of the run's backbone (best/ keeps a ZO backbone as a trajectory from them). Under the
        start-up lock where runs share the process: transformers' loading is not safe beside another thread's
        ("Cannot copy out of meta tensor")."""
        with self.startup or nullcontext():
            model, _ = load_model(self.cfg.model.name, dtype=self.cfg.model.dtype, device="cpu",
                                  trust_remote_code=self.cfg.model.trust_remote_code, staged=True)
        return {name: param.detach() for name, param in backbone_params(model).items()}

    def load_data(self):
        d = self.cfg.data
        task = load_task(d.task, data=d.data, template=d.template)
        splits = sample_splits(task, n_train=d.n_train, n_dev=d.n_dev, n_test=d.n_test, seed=d.seed)
        return splits, task

    def attach(self, model) -> tuple[torch.nn.Module, ParamGroups]:
        names = self.method_cls.adapter_names
        if not names:
            return model, ParamGroups(backbone=backbone_params(model))
        p = self.cfg.peft
        config = peft_config(self.peft_kind, r=p.r, alpha=p.alpha, dropout=p.dropout,
                             target_modules=p.target_modules, num_virtual_tokens=p.num_virtual_tokens)
        model, groups = attach_adapters(model, config, names)
        model.to(self.device)
        return model, groups

    def example_pools(self, splits) -> dict[str, list]:
        """The training examples each of the method's streams draws from: all of them ("train"), or the bilevel
        methods' D_f / D_g split ("upper", "lower") at their options' `upper_fraction`."""
        if "upper" not in self.method_cls.stream_names:
            return {"train": splits.train}
        upper, lower = split_bilevel(splits.train, self.options.upper_fraction, seed=self.cfg.train.seed)
        return {"upper": upper, "lower": lower}

    def batches(self, pools: dict[str, list], tokenizer) -> Batches:
        t, seed = self.cfg.train, self.cfg.train.seed
        streams = {name: ExampleStream(pools[name], t.batch_size, seed=zlib.crc32(f"{seed}:{name}".encode()))
                   for name in self.method_cls.stream_names}
        max_length, device = self.cfg.data.max_length, self.device
        share = self.ranks.share if self.ranks.parallel else None  # every rank draws the batch, takes its share
        return Batches(streams, lambda examples: encode_candidates(tokenizer, examples, max_length).to(device), share)

    def train(self, method: Method, evaluator: Evaluator, logger: RunLogger, memory: PeakMemory) -> LoopState:
        t = self.cfg.train
        settings = LoopSettings(steps=t.steps, eval_every=t.eval_every, log_every=t.log_every,
                                save_every=t.save_every, metric=evaluator.metric,
                                progress=t.progress and self.ranks.writes,
                                max_seconds=t.max_seconds, max_train_seconds=t.max_train_seconds,
                                weights=t.checkpoint_weights, ranks=self.ranks)
        state = resume(method, Path(t.resume), logger) if t.resume else LoopState()
        with nullcontext(self.stop) if self.stop else stop_on_signal() as stop:
            # a signal also ends a dev evaluation between batches; not under data parallelism, where the ranks
            # would disagree on where it stopped (they stop together after the next step instead)
            dev = partial(evaluator.dev, stop=None if self.ranks.parallel else stop)
            return train_loop(method, dev, self.run_dir, settings, logger, memory, state, stop)

    def finish(self, method: Method, evaluator: Evaluator, state: LoopState, memory: PeakMemory,
               seconds: float, training_seconds: float) -> dict:
        """Save the final weights, reload the best-on-dev ones, evaluate them on test, write result.json.
        `seconds`: the training loop's wall-clock; `training_seconds`: the same without evaluations and
        checkpoints."""
        self.save_final(method)
        self.ranks.barrier()  # best/ and final/ are written (by rank 0) before any rank reads best/
        if method.trains and (self.run_dir / "best" / "weights.safetensors").exists():
            load_best(method, self.run_dir / "best", self.base_backbone)
        with method.deployed():
            test = evaluator.test()
        result = {"method": self.cfg.train.method, "task": self.cfg.data.task, "peft": self.peft_kind,
                  "test": test, "best_dev": state.best_metric if method.trains else None,
                  "shots": len(evaluator.demos or ()),  # demonstrations used: fewer than asked where train is smaller
                  "best_step": state.best_step, "steps": state.step, "train_seconds": round(seconds, 2),
                  "train_seconds_without_evaluation": round(training_seconds, 2),
                  "skipped_steps": state.skipped_steps, "peak_memory_mib": memory.peaks,
                  "peak_memory_reserved_mib": memory.reserved,
                  "shared_process": self.startup is not None,
                  "work": self.work(state), "run_dir": str(self.run_dir), "config": asdict(self.cfg)}
        if self.ranks.parallel:
            result["ranks"] = {"world": self.ranks.world, "sent_bytes": self.ranks.sent_bytes,
                               "collectives": self.ranks.collectives, "control_bytes": self.ranks.control_bytes}
        if self.ranks.writes:
            (self.run_dir / "result.json").write_text(json.dumps(result, indent=1, default=str))
        return result

    def work(self, state: LoopState) -> dict[str, int]:
        """Sequences through the model in training steps, over every rank."""
        rows = self.ranks.gather((state.forward_rows, state.backward_rows))
        return {"forward_rows": sum(r[0] for r in rows), "backward_rows": sum(r[1] for r in rows)}

    def save_final(self, method: Method) -> None:
        """final/ (by rank 0), written whole or not at all: the deployed adapter, the backbone (a sharded one
        gathered by every rank first) and the seed trajectory."""
        if not method.trains:
            return
        backbone = {n: whole(p) for n, p in method.groups.backbone.items()} if method.trains_backbone else {}
        if self.ranks.writes:
            with written_whole(self.run_dir / "final") as final:
                self.write_final(method, backbone, final)

    def write_final(self, method: Method, backbone: dict[str, torch.Tensor], final: Path) -> None:
        if method.deploy_adapter is not None:
            save_adapter(method.model, method.deploy_adapter, str(final / "adapter"))
        if method.trains_backbone:
            save_weights(backbone, final / "backbone.safetensors")
        trajectory = method.seed_trajectory()
        if trajectory is not None:  # the backbone again, in kilobytes: `zofo replay RUN` rebuilds it
            trajectory.save(final / "trajectory.json")


class Evaluator:
    """Dev and test evaluation of the deployed model, with ``shots`` demonstrations before each prompt (in-context
    learning; 0: none)."""

    def __init__(self, model, tokenizer, task, splits, cfg: RunConfig, shots: int = 0, ranks: Ranks | None = None,
                 progress: bool | None = None):
        self.model, self.tokenizer, self.task, self.splits, self.cfg = model, tokenizer, task, splits, cfg
        self.ranks = ranks  # data parallel: each rank scores its share of the examples
        self.progress = cfg.train.progress if progress is None else progress
        self.metric = task.metric  # accuracy, f1, or the task's preferred score (macro_f1)
        self.demos = icl_demonstrations(splits.train, shots, cfg.data.seed) if shots else None

    def _run(self, examples, stop: StopRequest | None = None) -> dict:
        return evaluate(self.model, self.tokenizer, self.task, examples,
                        batch_size=self.cfg.train.eval_batch_size, demonstrations=self.demos,
                        progress=self.progress, stop=stop, ranks=self.ranks)

    def dev(self, stop: StopRequest | None = None) -> dict:
        n = self.cfg.train.n_eval_dev
        return self._run(self.splits.dev[:n] if n else self.splits.dev, stop)

    def test(self) -> dict:
        return self._run(self.splits.test)
