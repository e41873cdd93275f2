"""evaluate(): accuracy, ICL prompts, generation (stops at newline), and the `zofo eval` body."""

from __future__ import annotations

import argparse
import json

import pytest

import zofo.models.load
from zofo.cli.eval import add_eval_arguments, run_eval
from zofo.evaluation import evaluate, icl_demonstrations, with_demonstrations
from zofo.evaluation.generation import generate_answers
from zofo.evaluation.harness import demonstration_text
from zofo.tasks.example import Example

CLASSIFY = [Example(f"It was great {i}. It was", (" terrible", " great"), i % 2) for i in range(6)]
GENERATE = [Example("Question: where? Answer:", (), None, ("Paris", "in Paris"))] * 3


def test_accuracy_is_the_fraction_of_argmax_hits(model, tokenizer):
    from zofo.evaluation.metrics import argmax
    from zofo.evaluation.scoring import score_examples

    result = evaluate(model, tokenizer, None, CLASSIFY, batch_size=4, progress=False)
    scores = score_examples(model, tokenizer, CLASSIFY, progress=False)
    expected = sum(argmax(s) == e.label for s, e in zip(scores, CLASSIFY, strict=True)) / len(CLASSIFY)
    assert result == {"accuracy": pytest.approx(expected), "n": 6}


def test_icl_prompt_is_demonstrations_joined_by_blank_lines():
    demos = [Example("A. It was", (" bad", " good"), 1), Example("Q?\n", ("Yes", "No"), 0)]
    prompted = with_demonstrations([Example("B. It was", (" bad", " good"), 0)], demos)[0]
    assert prompted.prompt == "A. It was good\n\nQ?\nYes\n\nB. It was"
    assert prompted.candidates == (" bad", " good")
    assert demonstration_text(GENERATE[0]) == "Question: where? Answer: Paris"


def test_icl_demonstrations_are_seeded():
    first = icl_demonstrations(CLASSIFY, 3, seed=1)
    assert first == icl_demonstrations(CLASSIFY, 3, seed=1) and len(set(map(id, first))) == 3
    assert len(icl_demonstrations(CLASSIFY, 16, seed=0)) == 6


def test_generation_is_greedy_and_stops_at_newline(model, tokenizer):
    answers = generate_answers(model, tokenizer, [e.prompt for e in GENERATE], batch_size=2,
                               max_new_tokens=8, progress=False)
    assert len(answers) == 3 and all("\n" not in a for a in answers)
    assert answers[0] == answers[1] == answers[2]  # greedy and left-padded: identical prompts agree
    result = evaluate(model, tokenizer, None, GENERATE, progress=False)
    assert set(result) == {"f1", "exact_match", "n"} and 0 <= result["f1"] <= 1


def test_run_eval_prints_and_writes_json(model, tokenizer, monkeypatch, tmp_path, capsys):
    data = tmp_path / "sst2"
    data.mkdir()
    rows = "".join(f"it was fine {i} .\t{i % 2}\n" for i in range(40))
    for split in ("train", "test"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    monkeypatch.setattr(zofo.models.load, "load_model", lambda name, dtype, device: (model, tokenizer))
    out = tmp_path / "result.json"
    args = add_eval_arguments(argparse.ArgumentParser()).parse_args(
        ["--task", "sst2", "--data", str(data), "--n-test", "10", "--n-train", "8", "--n-dev", "4",
         "--shots", "2", "--output", str(out), "--device", "cpu", "--no-progress"])
    result = run_eval(args)
    printed = capsys.readouterr().out
    assert f"accuracy: {result['metrics']['accuracy']:.3f}" in printed
    assert json.loads(out.read_text())["metrics"]["n"] == 10
    assert result["sizes"] == {"train": 8, "dev": 4, "test": 10} and result["shots"] == 2


def _social_support_like(folder):
    """A BIG-bench task.json that, as social_support does, asks for macro_f1 as its preferred score."""
    labels = ("supportive", "neutral", "unsupportive")
    examples = [{"input": f"It was great {i}.", "target_scores": {c: int(c == labels[i % 3]) for c in labels}}
                for i in range(30)]
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps({"name": "social_support", "metrics": ["macro_f1"],
                                                  "preferred_score": "macro_f1", "examples": examples}))
    return folder


def test_a_task_asking_for_macro_f1_reports_it(model, tokenizer, tmp_path):
    from zofo.evaluation.metrics import argmax, macro_f1
    from zofo.evaluation.scoring import score_examples
    from zofo.tasks import load_task
    from zofo.tasks.bigbench import shuffled

    task = load_task("bigbench", _social_support_like(tmp_path / "social_support"))
    assert task.metrics == ("macro_f1",) and task.metric == "macro_f1"
    examples = task.examples("train")
    result = evaluate(model, tokenizer, task, examples, batch_size=8, progress=False)
    scores = score_examples(model, tokenizer, examples, progress=False)
    shown = [shuffled(r) for r in task.records("train")]  # the options in the order they are scored
    options = [o for o, _ in shown]
    golds = [o[gold] for o, gold in shown]
    predicted = [o[argmax(s)] for o, s in zip(options, scores, strict=True)]
    assert result["macro_f1"] == pytest.approx(macro_f1(golds, predicted)) and result["n"] == 30
    assert set(result) == {"accuracy", "macro_f1", "n"}
    assert "macro_f1" not in evaluate(model, tokenizer, None, CLASSIFY, progress=False)


def test_zofo_eval_prints_and_writes_macro_f1(model, tokenizer, monkeypatch, tmp_path, capsys):
    data = _social_support_like(tmp_path / "social_support")
    monkeypatch.setattr(zofo.models.load, "load_model", lambda name, dtype, device: (model, tokenizer))
    out = tmp_path / "result.json"
    args = add_eval_arguments(argparse.ArgumentParser()).parse_args(
        ["--task", "bigbench", "--data", str(data), "--n-test", "10", "--n-train", "8", "--n-dev", "4",
         "--output", str(out), "--device", "cpu", "--no-progress"])
    result = run_eval(args)
    assert f"macro_f1: {result['metrics']['macro_f1']:.3f}" in capsys.readouterr().out
    assert json.loads(out.read_text())["metrics"]["macro_f1"] == result["metrics"]["macro_f1"]
