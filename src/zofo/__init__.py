"""zofo: Bilevel ZOFO fine-tuning of language models (ZO backbone + FO PEFT) and its baselines."""

__version__ = "0.1.0"


def load_model(name_or_path: str, dtype="float32", device: str = "cpu", trust_remote_code: bool = False):
    """`(model, tokenizer)` for an alias, local folder, .gguf file or hub id (see zofo.models.load)."""
    from zofo.models.load import load_model as _load

    return _load(name_or_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)


def train(cfg, overwrite: bool = False) -> dict:
    """Run one training (or zero-shot / ICL evaluation) as the RunConfig says; returns its results. A run folder
    that holds a run is refused, unless ``overwrite`` (then that run is deleted first)."""
    from zofo.api import train as _train

    return _train(cfg, overwrite)


def train_together(cfgs: list) -> list:
    """Several runs at once in this process, each on its own CUDA stream (see zofo.run.concurrent)."""
    from zofo.api import train_together as _together

    return _together(cfgs)


def evaluate(model, tokenizer, task, examples, **options) -> dict:
    """Accuracy (or F1 / exact match) of `model` on prompted `examples` (see zofo.evaluation)."""
    from zofo.evaluation import evaluate as _evaluate

    return _evaluate(model, tokenizer, task, examples, **options)


def load_config(path=None, overrides: list | None = None):
    """A checked RunConfig: defaults, then the YAML file, then `section.key=value` overrides (see zofo.api)."""
    from zofo.api import load_config as _load_config

    return _load_config(path, overrides)
