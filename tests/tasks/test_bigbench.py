"""BIG-bench choices: shown and scored in a seeded per-example order, so the gold's place in task.json leaks nothing."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from zofo.tasks import load_task
from zofo.tasks.bigbench import choice_order

N, OPTIONS = 400, 4


def write_task(folder: Path, examples: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.json").write_text(json.dumps({"name": "gold_last", "examples": examples}))
    return folder


def gold_last_examples() -> list[dict]:
    """N examples of OPTIONS distinct words each, the gold always last in target_scores (as in many BIG-bench
    files); the words are drawn from a fixed list so some examples share options."""
    words = [f"word{i}" for i in range(12)]
    rng = random.Random(0)
    examples = []
    for i in range(N):
        options = rng.sample(words, OPTIONS)
        examples.append({"input": f"Question {i}: which one?", "target_scores": {o: int(o == options[-1])
                                                                                for o in options}})
    return examples


def shown_position(prompt: str, gold: str) -> int:
    """Where the gold stands among the choices listed in the prompt."""
    return [line.removeprefix("  choice: ") for line in prompt.split("\n") if line.startswith("  choice: ")].index(gold)


def test_the_gold_is_not_always_listed_where_the_file_puts_it(tmp_path):
    """The file puts every gold last; the prompts list it in each place about equally often, the candidates
    follow the listed order, and the label still points at the gold."""
    examples = gold_last_examples()
    task = load_task("bigbench", write_task(tmp_path / "gold_last", examples))
    counts = Counter()
    for raw, example in zip(examples, task.examples("train"), strict=True):
        gold = list(raw["target_scores"])[-1]
        assert example.candidates[example.label] == " " + gold
        listed = shown_position(example.prompt, gold)
        assert listed == example.label  # the candidates are in the listed order
        counts[listed] += 1
    assert sorted(counts) == list(range(OPTIONS))
    # uniform: N / OPTIONS = 100 each, binomial sd 8.7; 60-140 is more than 4 sd either way
    assert all(60 <= c <= 140 for c in counts.values()), counts
    chi2 = sum((c - N / OPTIONS) ** 2 / (N / OPTIONS) for c in counts.values())
    assert chi2 < 16.3, (counts, chi2)  # chi-square, 3 degrees of freedom: p = 0.001


def test_reordering_target_scores_in_the_file_changes_no_example(tmp_path):
    examples = gold_last_examples()
    rng = random.Random(1)
    reordered = []
    for raw in examples:
        items = list(raw["target_scores"].items())
        rng.shuffle(items)
        reordered.append({**raw, "target_scores": dict(items)})
    for template in ("bigbench", "plain"):
        a = load_task("bigbench", write_task(tmp_path / "a", examples), template).examples("train")
        b = load_task("bigbench", write_task(tmp_path / "b", reordered), template).examples("train")
        assert a == b


def test_several_golds_pick_the_same_one_whatever_the_file_order(tmp_path):
    forward = [{"input": "Pick a colour.", "target_scores": {"red": 1, "blue": 1, "green": 0}}]
    backward = [{"input": "Pick a colour.", "target_scores": {"green": 0, "blue": 1, "red": 1}}]
    a = load_task("bigbench", write_task(tmp_path / "a", forward)).examples("train")[0]
    b = load_task("bigbench", write_task(tmp_path / "b", backward)).examples("train")[0]
    assert a == b and a.candidates[a.label] == " blue"  # the first gold in sorted order


def test_choice_order_is_a_seeded_function_of_the_content():
    options = ["alpha", "beta", "gamma", "delta", "epsilon"]
    order = choice_order("Which?", options)
    assert sorted(order) == list(range(5))
    # pinned: SHA-256 gives the same order on every machine and Python (hash() would not)
    assert [options[i] for i in order] == ["gamma", "alpha", "epsilon", "beta", "delta"]
    reversed_order = choice_order("Which?", options[::-1])
    assert [options[::-1][i] for i in reversed_order] == [options[i] for i in order]
    assert choice_order("Which?", options, seed=1) != order
    assert choice_order("Which one?", options) != order
    # over many inputs every option comes first about equally often
    firsts = Counter(choice_order(f"q{i}", options)[0] for i in range(1000))
    assert all(150 <= c <= 250 for c in firsts.values()), firsts


def test_real_tasks_with_the_gold_in_one_place_spread_it(data):
    """temporal_sequences (4 options): the file puts every gold first; the prompts list it first about a quarter
    of the time."""
    task = load_task("bigbench", data / "bigbench" / "temporal_sequences")
    records, examples = task.records("train"), task.examples("train")
    assert all(r["label"] == 0 for r in records)
    counts = Counter(e.label for e in examples)
    assert max(counts.values()) / len(examples) < 0.3, counts
