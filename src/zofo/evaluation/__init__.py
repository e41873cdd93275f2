"""Evaluation: batched candidate scoring, greedy generation, metrics; never changes weights.

Its names load on first use (torch with them), so that reading an option's default from a submodule
(`zofo.evaluation.limits`) stays light: `zofo --help` imports no torch.
"""

from typing import TYPE_CHECKING

from zofo.lazy import lazy_names

if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use
    from zofo.evaluation.harness import evaluate, icl_demonstrations, with_demonstrations
    from zofo.evaluation.scoring import CandidateBatch, candidate_scores, encode_candidates, score_examples

_WHERE = {"evaluate": "harness", "icl_demonstrations": "harness", "with_demonstrations": "harness",
          "CandidateBatch": "scoring", "candidate_scores": "scoring", "encode_candidates": "scoring",
          "score_examples": "scoring"}
__all__ = ["CandidateBatch", "candidate_scores", "encode_candidates", "evaluate", "icl_demonstrations",
           "score_examples", "with_demonstrations"]


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
