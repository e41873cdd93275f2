"""Checkpoints: weights and state in safetensors (tensors) + JSON (everything else); nothing pickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from zofo.atomic import as_umask_allows, restored, written_whole
from zofo.errors import ZofoError


def flatten(state: Any, prefix: str = "", tensors: dict[str, torch.Tensor] | None = None):
    """Split a nested state (dicts, lists, tensors, scalars) into (tensors by path, JSON tree)."""
    tensors = {} if tensors is None else tensors
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().cpu().contiguous()
        return {"__tensor__": prefix}, tensors
    if isinstance(state, dict):
        int_keys = bool(state) and all(isinstance(k, int) for k in state)
        tree = {str(k): flatten(v, f"{prefix}.{k}", tensors)[0] for k, v in state.items()}
        return ({"__int_keys__": tree} if int_keys else tree), tensors
    if isinstance(state, (list, tuple)):
        return [flatten(v, f"{prefix}.{i}", tensors)[0] for i, v in enumerate(state)], tensors
    return state, tensors


def unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict) and "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if isinstance(tree, dict) and "__int_keys__" in tree:
        return {int(k): unflatten(v, tensors) for k, v in tree["__int_keys__"].items()}
    if isinstance(tree, dict):
        return {k: unflatten(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten(v, tensors) for v in tree]
    return tree


def save_state(state: Any, folder: Path, name: str) -> None:
    tree, tensors = flatten(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(tree))


def load_state(folder: Path, name: str) -> Any:
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return unflatten(json.loads((folder / f"{name}.json").read_text()), tensors)


def save_weights(params: dict[str, torch.nn.Parameter], path: Path) -> None:
    save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, str(path))
    as_umask_allows(Path(path))  # also where no `written_whole` folder holds it (zofo replay's output)


def load_weights(params: dict[str, torch.nn.Parameter], path: Path) -> None:
    """Copy saved tensors into `params` in place; every parameter must be present."""
    saved = load_file(str(path))
    missing = sorted(set(params) - set(saved))
    if missing:
        raise ZofoError(f"{path} lacks {len(missing)} parameters (e.g. {missing[0]})",
                        "resume with the same method, model and PEFT settings")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])


def save_checkpoint(folder: Path, params: dict, method_state: dict, loop_state: dict) -> None:
    """Write a complete checkpoint atomically."""
    with written_whole(folder) as partial:
        save_weights(params, partial / "weights.safetensors")
        save_state(method_state, partial, "method_state")
        (partial / "loop.json").write_text(json.dumps(loop_state, indent=1))


def load_checkpoint(folder: Path, params: dict) -> tuple[dict, dict]:
    """Load weights into `params`; return (method state, loop state)."""
    restored(folder)
    if not (folder / "loop.json").exists():
        raise ZofoError(f"{folder} is not a zofo checkpoint (no loop.json)", "pass a run's checkpoint folder")
    load_weights(params, folder / "weights.safetensors")
    return load_state(folder, "method_state"), json.loads((folder / "loop.json").read_text())
