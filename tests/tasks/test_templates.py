"""Every template renders the example it should (expected strings written by hand)."""
# ruff: noqa: E501  (a table of records and expected prompts reads best one case per line)

from __future__ import annotations

import pytest

from zofo.tasks import TASKS, Example, Record
from zofo.tasks.bigbench import FORMAT_DEFAULTS
from zofo.tasks.bigbench import TEMPLATES as BIGBENCH
from zofo.tasks.metaicl import metaicl_direct, metaicl_newline

NLI = Record({"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0})
CASES = [
    ("sst2", "mezo", Record({"sentence": "a fine film . ", "label": 1}),
     Example("a fine film . It was", (" terrible", " great"), 1)),
    ("sst2", "review", Record({"sentence": "a fine film .", "label": 0}),
     Example("Review: a fine film .\nSentiment:", (" negative", " positive"), 0)),
    ("rte", "mezo", NLI, Example('A dog runs.\nDoes this mean that "An animal moves." is true? Yes or No?\n',
                                 ("Yes", "No"), 0)),
    ("rte", "gpt3", NLI, Example("A dog runs.\nquestion: An animal moves. True or False?\nanswer:",
                                 (" True", " False"), 0)),
    ("cb", "mezo", NLI, Example('Suppose A dog runs. Can we infer that "An animal moves."? Yes, No, or Maybe?\n',
                                ("Yes", "No", "Maybe"), 0)),
    ("cb", "gpt3", NLI, Example("A dog runs.\nquestion: An animal moves. true, false, or neither?\nanswer:",
                                (" true", " false", " neither"), 0)),
    ("boolq", "mezo", Record({"passage": "Water is wet.", "question": "is water wet", "label": 1}),
     Example("Water is wet. Is water wet?", (" No", " Yes"), 1)),
    ("boolq", "qa", Record({"passage": "Water is wet.", "question": "is water wet?", "label": 0}),
     Example("Water is wet.\nquestion: Is water wet?\nanswer:", (" no", " yes"), 0)),
    ("wic", "mezo", Record({"word": "bank", "sentence1": "A river bank.", "sentence2": "A bank loan.", "label": 0}),
     Example('Does the word "bank" have the same meaning in these two sentences? Yes, No?\nA river bank.\n'
             "A bank loan.\n", ("No", "Yes"), 0)),
    ("wic", "gpt3", Record({"word": "bank", "sentence1": "A river bank.", "sentence2": "A bank loan.", "label": 1}),
     Example("A river bank.\nA bank loan.\nquestion: Is the word 'bank' used in the same way in the two "
             "sentences above?\nanswer:", (" no", " yes"), 1)),
    ("wsc", "mezo", Record({"text": "Tom thanked Bob because He helped.", "span1_text": "Bob", "span2_text": "He",
                            "label": 1}),
     Example('Tom thanked Bob because He helped.\nIn the previous sentence, does the pronoun "he" refer to Bob? '
             "Yes or No?\n", ("No", "Yes"), 1)),
    ("wsc", "gpt3", Record({"text": "Tom thanked Bob because he helped.", "span1_text": "Bob", "span2_text": "he",
                            "label": 0}),
     Example('Passage: Tom thanked Bob because he helped.\nQuestion: In the passage above, does the pronoun "he" '
             "refer to Bob?\nAnswer:", (" no", " yes"), 0)),
    ("multirc", "mezo", Record({"paragraph": "Tom has a cat.", "question": "What pet?", "answer": "A cat",
                                "label": 1}),
     Example('Tom has a cat.\nQuestion: What pet?\nI found this answer "A cat". Is that correct? Yes or No?\n',
             ("No", "Yes"), 1)),
    ("multirc", "qa", Record({"paragraph": "Tom has a cat.", "question": "What pet?", "answer": "A dog",
                              "label": 0}),
     Example("Tom has a cat.\nquestion: What pet?\nanswer: A dog\nIs the answer correct?", (" no", " yes"), 0)),
    ("copa", "mezo", Record({"premise": "The glass fell.", "choice1": "It broke.", "choice2": "I caught it.",
                             "question": "effect", "label": 0}),
     Example("The glass fell so", (" it broke.", " I caught it."), 0)),
    ("copa", "mezo", Record({"premise": "The glass broke.", "choice1": "It fell.", "choice2": "It sang.",
                             "question": "cause", "label": 0}),
     Example("The glass broke because", (" it fell.", " it sang."), 0)),
    ("copa", "mc", Record({"premise": "The glass fell.", "choice1": "It broke.", "choice2": "It sang.",
                           "question": "effect", "label": 1}),
     Example("The glass fell so?\nChoice 1: It broke.\nChoice 2: It sang.\nWhich choice makes more sense? "
             "1 or 2:", (" 1", " 2"), 1)),
    ("record", "mezo", Record({"passage": "Obama met Merkel.\n@highlight\nTalks", "query": "@placeholder spoke.",
                               "entities": ["Obama", "Merkel"], "gold": ["Merkel"]}),
     Example('Obama met Merkel.\n@highlight\nTalks\n@placeholder spoke.\nQuestion: what is the "@placeholder"\n'
             "Answer:", (" Obama", " Merkel"), 1, (" Merkel",))),
    ("record", "gpt3", Record({"passage": "Obama met Merkel.\n@highlight\nTalks", "query": "@placeholder spoke.",
                               "entities": ["Obama", "Merkel"], "gold": ["Obama"]}),
     Example("Obama met Merkel.\n- Talks\n-", (" Obama spoke.", " Merkel spoke."), 0, (" Obama spoke.",))),
    ("squad", "mezo", Record({"title": "Paris", "context": "Paris is in France.", "question": "Where?",
                              "answers": ["France"]}),
     Example("Title: Paris\nContext: Paris is in France.\nQuestion: Where?\nAnswer:", (), None, ("France",))),
    ("squad", "plain", Record({"title": "Paris", "context": "Paris is in France.", "question": "Where?",
                               "answers": ["France"]}),
     Example("Paris is in France.\nQ: Where?\nA:", (), None, ("France",))),
    ("drop", "mezo", Record({"title": "", "context": "7 points.", "question": "How many?", "answers": ["7"]}),
     Example("Passage: 7 points.\nQuestion: How many?\nAnswer:", (), None, ("7",))),
    ("drop", "plain", Record({"title": "", "context": "7 points.", "question": "How many?", "answers": ["7"]}),
     Example("7 points.\nQ: How many?\nA:", (), None, ("7",))),
    ("winogrande", "mezo", Record({"sentence": "It fell because _ was heavy.", "option1": "the box",
                                   "option2": "the shelf", "label": 1}),
     Example("", ("It fell because the box was heavy.", "It fell because the shelf was heavy."), 1)),
    ("winogrande", "replace", Record({"sentence": "It fell because _ was heavy.", "option1": "the box",
                                      "option2": "the shelf", "label": 0}),
     Example("It fell because _ was heavy. Replace the _ in the above sentence with the correct option:",
             (" the box", " the shelf"), 0)),
]


@pytest.mark.parametrize(("task", "template", "record", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_template_renders(task, template, record, expected):
    assert TASKS.get(task).templates[template](record) == expected


def test_every_classification_task_has_an_alternative_template():
    for name in TASKS.names():
        assert len(TASKS.get(name).templates) >= 2, name
        covered = {(c[0], c[1]) for c in CASES}
        assert all((name, t) in covered for t in TASKS.get(name).templates), name


def test_bigbench_templates():
    fmt = dict(FORMAT_DEFAULTS, task_prefix="Answer.\n", example_output_prefix="\nThe answer is ")
    record = Record({"input": "Is water wet?", "options": ["Yes", "No"], "label": 0, "format": fmt})
    # the choices in their seeded per-example order (`choice_order`: here No, Yes), the candidates in the same
    assert BIGBENCH["bigbench"](record) == Example(
        "Answer.\n\nQ: Is water wet?\n  choice: No\n  choice: Yes\nThe answer is", (" No", " Yes"), 1)
    assert BIGBENCH["plain"](record) == Example("Is water wet?", (" No", " Yes"), 1)
    record = Record({"input": "x", "options": ["a", "b"], "label": 1,
                     "format": dict(FORMAT_DEFAULTS, append_choices_to_input=False, example_output_prefix="\n")})
    assert BIGBENCH["bigbench"](record) == Example("Q: x\n", ("a", "b"), 1)


def test_metaicl_templates():
    record = Record({"input": "a great film ", "options": ["negative", "positive"], "label": 1})
    assert metaicl_direct(record) == Example("a great film", (" negative", " positive"), 1)
    assert metaicl_newline(record) == Example("a great film\n", ("negative", "positive"), 1)
