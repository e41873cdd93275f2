"""Evaluation: batched candidate scoring, greedy generation, metrics; never changes weights.

Its names load on first use (torch with them), so that reading an option's default from a submodule
(`zofo.evaluation.limits`) stays light: `zofo --help` imports no torch.
"""

import importlib

_WHERE = {"evaluate": "harness", "icl_demonstrations": "harness", "with_demonstrations": "harness",
          "CandidateBatch": "scoring", "candidate_scores": "scoring", "encode_candidates": "scoring",
          "score_examples": "scoring"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
