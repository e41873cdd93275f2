"""SQuAD-normalised F1 / exact match against hand-computed values; accuracy helpers; macro-F1 against a
confusion-matrix computation."""

from __future__ import annotations

import numpy as np
import pytest

from zofo.evaluation.metrics import argmax, exact_match, f1_score, is_correct, macro_f1, normalize_answer
from zofo.tasks.example import Example


def test_normalize_answer():
    assert normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert normalize_answer("An apple, a pear") == "apple pear"


@pytest.mark.parametrize(("prediction", "golds", "f1", "em"), [
    ("the Eiffel Tower", ["Eiffel Tower"], 1.0, 1.0),
    ("Eiffel", ["Eiffel Tower"], 2 * (1 * 0.5) / 1.5, 0.0),               # p=1, r=1/2 -> 2/3
    ("tower in Paris", ["Eiffel Tower"], 2 * (1 / 3 * 1 / 2) / (1 / 3 + 1 / 2), 0.0),  # p=1/3, r=1/2 -> 0.4
    ("Paris", ["Eiffel Tower", "Paris, France"], 2 * (1 * 0.5) / 1.5, 0.0),  # max over golds
    ("France", ["france"], 1.0, 1.0),
    ("nothing", ["Eiffel Tower"], 0.0, 0.0),
    ("", ["a"], 1.0, 1.0),   # both normalise to empty: SQuAD counts that as a match
])
def test_f1_and_exact_match(prediction, golds, f1, em):
    assert f1_score(prediction, golds) == pytest.approx(f1)
    assert exact_match(prediction, golds) == em


def test_repeated_tokens_count_once_each():
    # prediction "x y y", gold "y y z": common = 2 (y twice) -> p = 2/3, r = 2/3
    assert f1_score("x y y", ["y y z"]) == pytest.approx(2 / 3)


def test_argmax_and_correct():
    assert argmax([0.1, 0.5, 0.5]) == 1
    assert is_correct(Example("p", (" a", " b"), 1), 1)
    cloze = Example("p", (" Paris", " France", " Paris "), 0, (" Paris", " Paris "))
    assert is_correct(cloze, 2) and not is_correct(cloze, 1)


def _macro_f1_from_confusion(golds, predictions) -> float:
    """Per class precision TP/(TP+FP) and recall TP/(TP+FN) from a confusion matrix (0 where undefined), their
    harmonic mean, averaged over every class seen as a gold or a prediction (scikit-learn's `average="macro"`)."""
    classes = sorted(set(golds) | set(predictions))
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)))
    for gold, prediction in zip(golds, predictions, strict=True):
        confusion[index[gold], index[prediction]] += 1
    tp = np.diag(confusion)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros_like(tp), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros_like(tp), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return float(f1.mean())


def test_macro_f1_by_hand():
    # supportive: TP 1, FP 1, FN 1 -> 1/2; neutral: TP 1, FP 0, FN 1 -> 2/3; unsupportive: TP 1, FP 1, FN 0 -> 2/3
    golds = ["supportive", "supportive", "neutral", "neutral", "unsupportive"]
    predictions = ["supportive", "unsupportive", "neutral", "supportive", "unsupportive"]
    assert macro_f1(golds, predictions) == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert macro_f1(["a", "a"], ["a", "b"]) == pytest.approx((2 / 3 + 0) / 2)  # predicted-only class b scores 0
    with pytest.raises(ValueError, match="one prediction per gold"):
        macro_f1(["a"], [])


def test_macro_f1_matches_a_confusion_matrix_computation():
    rng = np.random.default_rng(0)
    for trial in range(50):
        k, n = int(rng.integers(2, 6)), int(rng.integers(1, 40))
        golds = [f"c{i}" for i in rng.integers(0, k, n)]
        predictions = [f"c{i}" for i in rng.integers(0, k, n)]
        assert macro_f1(golds, predictions) == pytest.approx(_macro_f1_from_confusion(golds, predictions)), trial
