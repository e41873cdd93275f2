"""Which settings a run may have: `RunConfig` assembled from every section, the consistency checks that need the
registries (methods, PEFT kinds, dtypes, tasks; each method checks its own options), the checked `load_config`,
and the rules for resuming a run with its own settings.

`zofo.config` reads and types a config without torch; this module adds what only the layers below can know.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path

from zofo.atomic import restored
from zofo.config import (
    CHECKPOINT_WEIGHTS,
    CORE_SECTIONS,
    RESUME_MAY_CHANGE,
    check_ranges,
    flat,
    pointing_at,
    read_config,
)
from zofo.errors import ZofoError
from zofo.methods import METHODS, Method
from zofo.methods.base import SCHEDULES
from zofo.models.adapters import PEFT_KINDS
from zofo.models.load import DTYPES
from zofo.run.folder import check_goes_on, check_run_folder
from zofo.tasks import TASKS, check_task_name
from zofo.zo.options import ZOOptions


def _sections() -> dict[str, type]:
    """Every config section: those every run has, the shared `zo`, each method's own (`Method.section`), `train`
    last. Methods that share a section share its dataclass."""
    sections = {name: cls for name, cls in CORE_SECTIONS.items() if name != "train"} | {"zo": ZOOptions}
    for name in METHODS:
        method = METHODS.get(name)
        if method.section is None:
            continue
        if sections.setdefault(method.section, method.Options) is not method.Options:
            raise TypeError(f"method {name} declares config section {method.section!r} with another dataclass")
    return sections | {"train": CORE_SECTIONS["train"]}


#: a run's whole config: one field per section, each a dataclass built and checked by `zofo.config.build`. It is
#: assembled here, not in `zofo.config`, because its sections are declared in the layers that use them (the
#: `zo` settings in `zofo.zo.options`, a method's options in its own file), above `zofo.config`.
RunConfig = dataclasses.make_dataclass(
    "RunConfig", [(name, cls, dataclasses.field(default_factory=cls)) for name, cls in _sections().items()],
    namespace={"__doc__": "A run's whole config, one typed section per field (see `zofo config`).",
               "__module__": __name__})

#: old dotted key -> new one, for every section that renamed a key (`RENAMED` of its dataclass)
RENAMED: dict[str, str] = {old: f"{section}.{key}" for section, cls in _sections().items()
                           for old, key in getattr(cls, "RENAMED", {}).items()}


def method_class(cfg: RunConfig) -> type[Method]:
    """The class of the configured method (a miss names `train.method` and the valid names)."""
    try:
        return METHODS.get(cfg.train.method)
    except ZofoError as err:  # the registry's message, with the key it is about
        raise ZofoError(err.what, err.fix, "train.method") from err


def method_options(cfg: RunConfig, method: type[Method]):
    """The method's own options (its config section), or None for a method without any."""
    return getattr(cfg, method.section) if method.section else None


def check_options(cfg: RunConfig) -> None:
    """Refuse inconsistent options before any model or data is loaded. Each error names its config key, so that
    `load_config`, which runs this, can point at the key's line in a config file."""
    check_ranges(cfg)
    method = method_class(cfg)
    method.check(cfg.train.method, cfg.peft.kind, method_options(cfg, method))
    cfg.zo.check()
    if cfg.train.max_rows is not None and not method.takes_pieces:
        takers = ", ".join(n for n in METHODS if METHODS.get(n).takes_pieces)
        raise ZofoError(f"train.max_rows does not apply to method {cfg.train.method} (its steps take whole batches)",
                        f"drop it, or choose one of: {takers} (meta-train --max-rows cuts the bilevel methods' "
                        "batches)", "train.max_rows")
    _check_choices(cfg)
    _check_objective(cfg, method)
    _check_steps(cfg, method)


def _check_choices(cfg: RunConfig) -> None:
    """Values that name one of a fixed set: checked here, not where the first of them is used, minutes later."""
    for key, value, choices in [("model.dtype", cfg.model.dtype, DTYPES),
                                ("peft.kind", cfg.peft.kind, (None, "none", *PEFT_KINDS)),
                                ("train.checkpoint_weights", cfg.train.checkpoint_weights, CHECKPOINT_WEIGHTS),
                                ("optim.schedule", cfg.optim.schedule, SCHEDULES)]:
        if value not in choices:
            named = ", ".join(c for c in choices if c not in (None, "none"))
            raise ZofoError(f"unknown {key} {value!r}", f"use one of: {named}", key)
    check_task_name(cfg.data.task)
    if cfg.model.device != "auto" and not _is_device(cfg.model.device):
        raise ZofoError(f"unknown model.device {cfg.model.device!r}", "use auto, cpu, cuda or cuda:N", "model.device")


def _is_device(name: str) -> bool:
    """Whether torch names a device so (cpu, cuda, cuda:1, mps, ...), without touching it."""
    import torch  # here: the CLI parses and checks its arguments before torch is needed

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True


def _check_objective(cfg: RunConfig, method: type[Method]) -> None:
    """The candidate cross-entropy needs candidates: generative tasks (SQuAD, DROP) train with the LM loss."""
    objective, task = cfg.data.objective, cfg.data.task
    if objective not in ("ce", "lm"):
        raise ZofoError(f"unknown data.objective {objective!r}", "use ce (candidate cross-entropy) or lm",
                        "data.objective")
    if objective == "ce" and task in TASKS and TASKS.get(task).generative and method.trains:
        raise ZofoError(f"task {task} is generative (its examples have no candidates), so the ce objective "
                        "cannot train on it", "use --set data.objective=lm", "data.objective")


def _check_steps(cfg: RunConfig, method: type[Method]) -> None:
    """A method that trains needs a step to train, examples to train on and dev examples to choose its checkpoint;
    one that shows demonstrations needs examples to draw them from. Evaluating without training is what zero-shot
    and icl do."""
    if method.trains and cfg.train.steps < 1:
        raise ZofoError(f"train.steps is {cfg.train.steps}: method {cfg.train.method} would train for no step",
                        "give --steps N >= 1; to only evaluate, use --method zero-shot (or icl), or `zofo eval`",
                        "train.steps")
    if method.trains and cfg.data.n_dev < 1:
        raise ZofoError(f"data.n_dev is {cfg.data.n_dev}: method {cfg.train.method} chooses its checkpoint on dev",
                        "give --n-dev N >= 1", "data.n_dev")
    shots = getattr(method_options(cfg, method), "shots", 0)
    if (method.trains or shots) and cfg.data.n_train < 1:
        needs = "trains on" if method.trains else f"draws its {shots} demonstrations from"
        raise ZofoError(f"data.n_train is {cfg.data.n_train}: method {cfg.train.method} {needs} the training split",
                        "give --n-train N >= 1", "data.n_train")
    if shots > cfg.data.n_train:  # the run drew n_train demonstrations and its result said so, its config not
        raise ZofoError(f"icl.shots {shots} with data.n_train {cfg.data.n_train}: the demonstrations are drawn from "
                        "the train split", f"give --n-train {shots} or more, or --shots {cfg.data.n_train} or fewer",
                        "icl.shots")


def peft_kind(cfg: RunConfig) -> str | None:
    """The PEFT kind this run attaches (LoRA by default for methods that need one)."""
    if not method_class(cfg).adapter_names:
        return None
    return cfg.peft.kind or "lora"


def run_dir_for(cfg: RunConfig) -> Path:
    if cfg.train.output_dir:
        return Path(cfg.train.output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.train.method}-{cfg.data.task.replace(':', '-')}-{stamp}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file, then `section.key=value` overrides (`zofo.config.read_config`), then checked
    for consistency (`check_options`). An error in a value that came from the file names the file and the key's
    line."""
    cfg, lines = read_config(path, overrides, cls=RunConfig, renamed=RENAMED)
    with pointing_at(path, lines):
        check_options(cfg)
    return cfg


def resumed_config(cfg: RunConfig) -> RunConfig:
    """The config a run resumed from ``cfg.train.resume`` (RUN/checkpoint) trains with: the run's own
    (RUN/config.yaml), with the `RESUME_MAY_CHANGE` keys that ``cfg`` sets (to any value, its default included).
    Any other setting that ``cfg`` sets differently from the run's is refused: the checkpoint was made under it."""
    checkpoint = restored(Path(cfg.train.resume))  # a save killed between its two renames left RUN/checkpoint.old
    run_file = checkpoint.parent / "config.yaml"
    if not (checkpoint / "loop.json").exists() or not run_file.exists():
        raise ZofoError(f"train.resume {checkpoint}: no checkpoint with its run's config.yaml there",
                        "give the checkpoint folder inside a run folder, RUN/checkpoint", "train.resume")
    resumed = load_config(run_file)
    # paths as the run saved them (absolute); a relative one given here is taken from the current folder
    given, run, default = flat(with_absolute_paths(cfg)), flat(resumed), flat(RunConfig())
    # what the command set (`given` of `read_config`, a value equal to the default included); a config built in
    # Python has no record of it, so there a value that differs from the default counts as set
    named = getattr(cfg, "given", None)
    named = {k for k in given if given[k] != default[k]} if named is None else set(named) & set(given)
    conflicts = [k for k in given if k not in RESUME_MAY_CHANGE and k in named and not _same(given[k], run[k])]
    if conflicts:
        shown = "; ".join(f"{k} is {given[k]!r} here, {run[k]!r} in the run" for k in conflicts)
        raise ZofoError(f"train.resume {checkpoint}: {shown} ({run_file})",
                        "resume with the run's settings: give --resume alone (with --steps etc. to extend it)",
                        conflicts[0])
    for key in RESUME_MAY_CHANGE:
        if key in named:
            section, name = key.split(".", 1)
            setattr(getattr(resumed, section), name, given[key])
    check_goes_on(checkpoint, resumed.train.steps, f"train.resume {checkpoint}", "train.steps", "test", "train.steps")
    return resumed


def prepared(cfg: RunConfig, overwrite: bool = False) -> RunConfig:
    """The config a run trains with (a resumed run's own, `resumed_config`), once its options and its run folder
    are checked (`zofo.run.folder`): everything that can be refused before anything loads."""
    if cfg.train.resume and overwrite:
        raise ZofoError("--overwrite and --resume contradict each other (a resumed run continues its folder)",
                        "give one of them", "train.resume")
    cfg = resumed_config(cfg) if cfg.train.resume else with_absolute_paths(cfg)
    if not cfg.train.resume and not cfg.train.output_dir:  # named once: the folder checked is the one written
        cfg.train.output_dir = str(run_dir_for(cfg))
    check_options(cfg)
    if not cfg.train.resume:
        check_run_folder(run_dir_for(cfg), overwrite)
    return cfg


def _same(a, b) -> bool:
    """Equal values, or two spellings of one existing path (a link and its target)."""
    if a == b:
        return True
    paths = [Path(v).expanduser() for v in (a, b) if isinstance(v, str) and v]
    return len(paths) == 2 and all(p.exists() for p in paths) and os.path.samefile(*paths)


def with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with model.name and data.data made absolute where they name local paths (an alias stays a name), so
    that the run's config.yaml means the same model and data to `--resume` and `zofo replay` from any folder."""
    from zofo.models.packaged import ALIASES

    cfg = copy.deepcopy(cfg)
    for section, key in (("model", "name"), ("data", "data")):
        part = getattr(cfg, section)
        value = getattr(part, key)
        if value and value not in ALIASES and Path(value).expanduser().exists():  # links kept as given
            setattr(part, key, os.path.abspath(Path(value).expanduser()))
    return cfg
