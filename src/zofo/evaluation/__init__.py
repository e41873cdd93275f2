"""Evaluation: batched candidate scoring, greedy generation, metrics; never changes weights."""

from zofo.evaluation.harness import evaluate, icl_demonstrations, with_demonstrations
from zofo.evaluation.scoring import CandidateBatch, candidate_scores, encode_candidates, score_examples

__all__ = ["CandidateBatch", "candidate_scores", "encode_candidates", "evaluate", "icl_demonstrations",
           "score_examples", "with_demonstrations"]
