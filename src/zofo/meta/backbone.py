"""The backbone a meta-test runs on: a model name (alias, folder, GGUF file, hub id), or a run folder whose
training changed the backbone (`RUN/final/backbone.safetensors`, e.g. mezo, bilevel-zofo, a meta-training run),
which is written as a plain model folder so that every evaluation and k-shot run loads it by path. A run folder's
backbone is known by the SHA-256 of its weights: a run trained further (or again under the same path) is another
backbone, so its folder is written anew and a meta-test folder holding the old one's results refuses it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from zofo.atomic import written_whole
from zofo.errors import ZofoError
from zofo.models.load import load_model, resolve_source
from zofo.run.checkpoint import load_weights
from zofo.run.options import load_config

BACKBONE_FILE = Path("final") / "backbone.safetensors"


def is_run_folder(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "final").is_dir()


def resolve_backbone(spec: str, out_dir: Path, rewrite: bool = False) -> tuple[str, dict]:
    """(the model name or folder every run of the meta-test loads, a description for the results): `describe_backbone`,
    then `backbone_folder`."""
    described = describe_backbone(spec, out_dir)
    return backbone_folder(spec, out_dir, described, rewrite), described


def describe_backbone(spec: str, out_dir: Path) -> dict:
    """What a meta-test's results say they ran on: the model, or (a run folder) OUT/backbone with the run, its base
    model and method and the SHA-256 of its weights; a wrong name or path, or a run that left its backbone
    unchanged, fails here, before any task runs."""
    if not is_run_folder(spec):
        resolve_source(spec)
        return {"model": spec}
    run = Path(spec).expanduser()
    weights = run / BACKBONE_FILE
    cfg = load_config(run / "config.yaml")
    if not weights.is_file():
        raise ZofoError(f"run {run} (method {cfg.train.method}) left its backbone unchanged: it has no {BACKBONE_FILE}",
                        f"meta-test its base model instead: --model {cfg.model.name}")
    return {"model": str(Path(out_dir) / "backbone"), "run": str(run), "base": cfg.model.name,
            "method": cfg.train.method, "weights_sha256": _sha256(weights)}


def backbone_folder(spec: str, out_dir: Path, described: dict, rewrite: bool = False) -> str:
    """The model every run loads: ``spec`` itself, or, for a run folder, OUT/backbone, written where it is missing,
    was built from other weights, or ``rewrite`` asks for it."""
    if "run" not in described:
        return spec
    folder = Path(out_dir) / "backbone"
    source = folder / "source.json"  # written inside the folder, which is written whole: there means complete
    built_from = json.loads(source.read_text()).get("weights_sha256") if source.is_file() else None
    if rewrite or built_from != described["weights_sha256"]:
        cfg = load_config(Path(described["run"]) / "config.yaml")
        model, tokenizer = load_model(cfg.model.name, dtype=cfg.model.dtype, device="cpu",
                                      trust_remote_code=cfg.model.trust_remote_code, staged=True)
        load_weights(dict(model.named_parameters()), Path(described["run"]) / BACKBONE_FILE)
        with written_whole(folder) as partial:
            model.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
            (partial / "source.json").write_text(json.dumps(described, indent=1) + "\n")
    return str(folder)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(1 << 23):
            digest.update(chunk)
    return digest.hexdigest()
