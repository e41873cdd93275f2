"""The options of a meta-training run (`zofo meta-train`), read and checked without torch: the command line builds
its flags from them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from zofo.config import RANGES, refuse_non_finite
from zofo.errors import ZofoError

if TYPE_CHECKING:
    from zofo.meta.metatrain import MetaOptions
    from zofo.run.options import RunConfig

BILEVEL = ("bilevel-zofo", "bilevel-fo")
BASELINES = ("fo-peft", "fo-full", "mezo")
#: what a resumed run may set anew (everything else is read back from meta.json)
RESUME_MAY_CHANGE = ("steps", "max_seconds", "save_every", "log_every", "progress", "eval_every")


@dataclass
class MetaTrainConfig:
    """Every option of `zofo meta-train` (docs/META.md states them)."""

    split: str
    model: str = "smollm2-135m"
    out: str | None = None
    method: str = "bilevel-zofo"    # bilevel-zofo | bilevel-fo (Alg. 1) | fo-peft | fo-full | mezo (baselines)
    peft: str = "lora"              # lora | prefix | prompt
    r: int = 8
    alpha: int = 16
    num_virtual_tokens: int = 10
    tasks_per_step: int = 4         # T
    lower_steps: int = 10           # K
    lam: float = 1e4
    upper: int = 256                # per-task D_f
    lower: int = 512                # per-task D_g
    n_dev: int = 16                 # per-task dev examples, held out from both levels
    lr: float = 1e-6                # theta (ZO-SGD; Adam for bilevel-fo and fo-full)
    lr_upper: float = 1e-4          # p_i (and the shared LoRA of fo-peft)
    lr_lower: float = 1e-4          # z_i
    eps: float = 1e-3
    seed: int = 0
    steps: int = 1000
    max_seconds: float | None = None  # wall-clock budget: training stops at the first step past it (then saves)
    batch_size: int = 16
    max_rows: int | None = None     # rows (examples x candidates) a forward takes at most
    max_length: int = 256
    eval_batch_size: int = 32
    eval_every: int = 0             # 0: dev before and after training only
    save_every: int = 0             # 0: checkpoint at the end only
    log_every: int = 10
    device: str = "auto"
    dtype: str = "float32"
    bigbench_root: str | None = None
    progress: bool = True

    def check(self) -> None:
        """One-line refusals of bad values, before anything loads."""
        refuse_non_finite(self, lambda name: f"--{name.replace('_', '-')}")
        if self.method not in BILEVEL + BASELINES:
            raise ZofoError(f"meta-train --method {self.method!r} is not one of {', '.join(BILEVEL + BASELINES)}",
                            "bilevel-zofo is the paper's; the others are its first-order twin and the baselines")
        if self.peft not in ("lora", "prefix", "prompt"):
            raise ZofoError(f"--peft {self.peft!r} is not lora, prefix or prompt", "use one of those")
        for name in ("tasks_per_step", "lower_steps", "upper", "lower", "n_dev", "steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ZofoError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}",
                                "give a positive number")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ZofoError(f"--max-seconds must be > 0, got {self.max_seconds}", "leave it unset for no budget")
        if self.max_rows is not None and self.max_rows < 1:
            raise ZofoError(f"--max-rows must be >= 1, got {self.max_rows}", "leave it unset for whole batches")
        if self.method == "fo-peft" and self.peft != "lora":
            raise ZofoError(f"multi-task fo-peft merges its shared adapter into the backbone: --peft {self.peft} "
                            "cannot be merged", "use --peft lora")
        self._check_rates()

    def _check_rates(self) -> None:
        for name in ("lr", "lr_upper", "lr_lower"):  # the single-task run's ranges for its learning rates
            allowed = RANGES[f"optim.{name}"]
            if not allowed.allows(getattr(self, name)):
                raise ZofoError(f"--{name.replace('_', '-')} must be {allowed}, got {getattr(self, name)}",
                                allowed.hint)
        if self.lam < 0 or self.eps <= 0:
            raise ZofoError(f"lambda must be >= 0 and eps > 0 (got {self.lam}, {self.eps})", "e.g. 1e4 and 1e-3")

    def options(self) -> MetaOptions:
        from zofo.meta.metatrain import MetaOptions  # torch: not for reading the options
        from zofo.zo.options import ZOOptions

        return MetaOptions(tasks_per_step=self.tasks_per_step, lower_steps=self.lower_steps, lam=self.lam,
                           lr=self.lr, lr_upper=self.lr_upper, lr_lower=self.lr_lower, zo=ZOOptions(eps=self.eps),
                           seed=self.seed, steps=self.steps, first_order=self.method == "bilevel-fo",
                           max_rows=self.max_rows)

    def run_config(self) -> RunConfig:
        """The single-task config this run extends: what `zofo.meta.backbone` and model loaders read."""
        from zofo.run.options import RunConfig

        cfg = RunConfig()
        cfg.model.name, cfg.model.dtype, cfg.model.device = self.model, self.dtype, self.device
        cfg.train.method, cfg.train.steps, cfg.train.seed = self.method, self.steps, self.seed
        cfg.train.max_seconds = self.max_seconds
        cfg.train.batch_size, cfg.train.output_dir = self.batch_size, self.out
        cfg.peft.kind = None if self.method in ("fo-full", "mezo") else self.peft
        cfg.peft.r, cfg.peft.alpha, cfg.peft.num_virtual_tokens = self.r, self.alpha, self.num_virtual_tokens
        o = cfg.optim
        o.lr, o.lr_upper, o.lr_lower = self.lr, self.lr_upper, self.lr_lower
        cfg.zo = replace(cfg.zo, eps=self.eps)
        cfg.bilevel = replace(cfg.bilevel, lam=self.lam, lower_steps=self.lower_steps)
        cfg.data.task, cfg.data.max_length = "bigbench", self.max_length
        cfg.train.eval_batch_size = self.eval_batch_size
        return cfg
