"""The backbone a meta-test runs on: a model name (alias, folder, GGUF file, hub id), or a run folder whose
training changed the backbone (`RUN/final/backbone.safetensors`, e.g. mezo, bilevel-zofo, a meta-training run),
which is written once as a plain model folder so that every evaluation and k-shot run loads it by path."""

from __future__ import annotations

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
    """(the model name or folder every run of the meta-test loads, a description for the results). The model folder
    a run folder gives is written once, or again with ``rewrite`` (a resumed run has a new backbone)."""
    if not is_run_folder(spec):
        resolve_source(spec)  # a wrong name or path fails here, before any task runs
        return spec, {"model": spec}
    run = Path(spec).expanduser()
    weights = run / BACKBONE_FILE
    cfg = load_config(run / "config.yaml")
    if not weights.is_file():
        raise ZofoError(f"run {run} (method {cfg.train.method}) left its backbone unchanged: it has no {BACKBONE_FILE}",
                        f"meta-test its base model instead: --model {cfg.model.name}")
    folder = out_dir / "backbone"
    if rewrite or not folder.is_dir():  # written whole or not at all, so a folder that is there is complete
        model, tokenizer = load_model(cfg.model.name, dtype=cfg.model.dtype, device="cpu",
                                      trust_remote_code=cfg.model.trust_remote_code, staged=True)
        load_weights(dict(model.named_parameters()), weights)
        with written_whole(folder) as partial:
            model.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
    return str(folder), {"model": str(folder), "run": str(run), "base": cfg.model.name,
                         "method": cfg.train.method}
