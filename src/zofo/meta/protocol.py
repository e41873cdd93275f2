"""The meta-test protocol: what every held-out task is measured with, fixed before any run.

Per task and per seed s of `seeds`, `sample_splits(task, n_train=k, n_dev, n_test, seed=s)` draws the k-shot
sample (train), a dev set and a test set, disjoint; the three settings share that test set, so they are paired:
- zero-shot: the backbone alone;
- ICL: the k training examples as demonstrations (in a seeded order) before every test prompt;
- k-shot LoRA: a fresh LoRA (r 16, alpha 16, on peft's default modules for the architecture) trained on the k
  examples with AdamW (lr 2e-4, constant, no weight decay; the paper's code) for `steps` steps of `batch_size`
  examples, through the ordinary `fo-peft` run. Dev (n_dev examples) chooses only among the checkpoints the
  protocol declares, steps 0, eval_every, 2 eval_every, ..., steps; the chosen one is tested once.
A task with fewer examples than k + n_dev + n_test gets a smaller test set (all that is left), and is refused when
nothing is left for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from zofo.config import refuse_non_finite
from zofo.errors import ZofoError
from zofo.evaluation.limits import MAX_TOKENS

#: settings that bound memory only: a unit records them, the folder's protocol does not
BOUNDS = ("eval_max_tokens", "max_rows")


@dataclass(frozen=True)
class MetaTestProtocol:
    shots: int = 16                    # k: the k-shot sample, the ICL demonstrations, the LoRA's training set
    seeds: tuple[int, ...] = (0, 1, 2)  # one k-shot sample (and test set) per seed
    n_dev: int = 16                    # dev examples: choose the checkpoint among the declared ones
    n_test: int = 1000                 # test examples per seed (fewer where the task has fewer)
    steps: int = 100                   # LoRA training steps
    eval_every: int = 25               # declared checkpoints: every eval_every steps, 0 and the last included
    batch_size: int = 16
    lr: float = 2e-4                   # AdamW, constant, no weight decay
    r: int = 16
    alpha: int = 16
    max_length: int = 256              # tokens per training row (the prompt is left-truncated)
    eval_batch_size: int = 32
    eval_max_tokens: int = MAX_TOKENS  # tokens per zero-shot / ICL scoring forward (rows x padded width)
    max_rows: int | None = None        # rows per k-shot LoRA forward (pieces accumulated, eager); None: whole batches

    def check(self) -> None:
        """Refuse a protocol that cannot run, naming the option."""
        refuse_non_finite(self, lambda name: f"meta-test --{name.replace('_', '-')}")
        for name in ("shots", "n_test", "steps", "batch_size", "r", "alpha", "max_length", "eval_batch_size",
                     "eval_max_tokens"):
            if getattr(self, name) < 1:
                flag = f"--{name.replace('_', '-')}"
                raise ZofoError(f"meta-test {flag} must be >= 1, got {getattr(self, name)}", f"give {flag} 1 or more")
        if self.n_dev < 1 or self.eval_every < 0 or self.lr <= 0:
            raise ZofoError("meta-test needs --n-dev >= 1, --eval-every >= 0 and --lr > 0",
                            "dev chooses the checkpoint; eval-every 0 declares only steps 0 and the last")
        if self.max_rows is not None and self.max_rows < 1:
            raise ZofoError(f"meta-test --max-rows must be >= 1, got {self.max_rows}", "leave it unset for whole "
                            "batches")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ZofoError(f"meta-test seeds {list(self.seeds)} must be distinct and at least one",
                            "e.g. --seeds 0 1 2")

    def to_dict(self) -> dict:
        """The protocol as it identifies a meta-test folder: every setting but the memory bounds (`bounds`), which
        change no result beyond float rounding, so that a folder continues under other bounds (and one written
        before they existed)."""
        kept = {k: v for k, v in asdict(self).items() if k not in BOUNDS}
        return kept | {"seeds": list(self.seeds), "optimizer": "AdamW", "schedule": "constant", "weight_decay": 0.0,
                       "peft": "lora"}

    def bounds(self) -> dict:
        """The memory bounds the units ran with (each unit records them)."""
        return {k: getattr(self, k) for k in BOUNDS}

    def run_overrides(self) -> list[str]:
        """The `fo-peft` run's settings that the protocol fixes (the task, seed and folders are added per run)."""
        return ["train.method=fo-peft", "peft.kind=lora", f"peft.r={self.r}", f"peft.alpha={self.alpha}",
                f"optim.lr_upper={self.lr}", "optim.schedule=constant", "optim.weight_decay=0.0",
                f"train.steps={self.steps}", f"train.eval_every={self.eval_every}", "train.save_every=0",
                f"train.batch_size={self.batch_size}", f"train.eval_batch_size={self.eval_batch_size}",
                f"data.n_train={self.shots}", f"data.n_dev={self.n_dev}", f"data.max_length={self.max_length}",
                "train.progress=false", *([f"train.max_rows={self.max_rows}"] if self.max_rows is not None else [])]
