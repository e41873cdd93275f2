"""SQuAD-normalised F1 / exact match against hand-computed values; accuracy helpers."""

from __future__ import annotations

import pytest

from zofo.evaluation.metrics import argmax, exact_match, f1_score, is_correct, normalize_answer
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
