"""Metrics: accuracy and macro-F1 over candidates, and SQuAD-normalised token F1 / exact match (max over golds)."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from zofo.tasks.example import Example

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold, else 0.0."""
    return float(any(normalize_answer(prediction) == normalize_answer(gold) for gold in golds))


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Token-overlap F1 between normalised strings, the best over the gold answers."""
    return max((_f1(prediction, gold) for gold in golds), default=0.0)


def is_correct(example: Example, prediction: int) -> bool:
    """A candidate prediction is right if it is the label, or (cloze tasks) any gold candidate string."""
    if example.answers and example.candidates:
        return example.candidates[prediction] in example.answers
    return prediction == example.label


def argmax(scores: Sequence[float]) -> int:
    """Index of the highest score (the first on ties)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def macro_f1(golds: Sequence[str], predictions: Sequence[str]) -> float:
    """BIG-bench's macro_f1 for multiple choice: the unweighted mean over classes of 2TP / (2TP + FP + FN).

    A class is an answer string (the gold option, or the predicted one); every class that is a gold or a
    prediction counts, so a class predicted but never gold scores 0 (as scikit-learn's `average="macro"`).
    """
    if len(golds) != len(predictions) or not golds:
        raise ValueError(f"macro_f1 needs one prediction per gold, at least one ({len(predictions)}, {len(golds)})")
    pairs = list(zip(golds, predictions, strict=True))
    scores = []
    for cls in sorted(set(golds) | set(predictions)):
        tp = sum(g == cls and p == cls for g, p in pairs)
        wrong = sum((g == cls) != (p == cls) for g, p in pairs)  # false positives + false negatives
        scores.append(2 * tp / (2 * tp + wrong))
    return sum(scores) / len(scores)


def chosen_answer(example: Example, index: int) -> str:
    """The answer string of candidate `index` (its class for macro_f1), without the joining space."""
    return example.candidates[index].strip()
