"""A run on a task whose preferred score is macro_f1 logs it, chooses its best checkpoint by it, reports it."""

from __future__ import annotations

import json

from zofo import api
from zofo.api import load_config


def test_run_reports_and_chooses_on_the_tasks_macro_f1(tmp_path, tiny_model_dir):
    labels = ("yes", "no", "true")
    examples = [{"input": f"the movie was good {i} ?", "target_scores": {c: int(c == labels[i % 3]) for c in labels}}
                for i in range(40)]
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "task.json").write_text(json.dumps(
        {"name": "t", "metrics": ["macro_f1"], "preferred_score": "macro_f1", "examples": examples}))
    result = api.train(load_config(None, [
        f"model.name={tiny_model_dir}", "data.task=bigbench", f"data.data={tmp_path / 'task'}", "data.n_train=16",
        "data.n_dev=8", "data.n_test=8", "data.max_length=32", "train.method=fo-peft", "peft.kind=lora",
        "train.steps=3", "train.batch_size=4", "train.eval_every=1", "train.progress=false",
        f"train.output_dir={tmp_path / 'run'}", "optim.lr=1e-2"]))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    dev = [r["macro_f1"] for r in log if r["phase"] == "dev"]
    accuracy = [r["accuracy"] for r in log if r["phase"] == "dev"]
    assert len(dev) >= 3 and result["best_dev"] == max(dev) != max(accuracy)  # chosen on macro_f1, not accuracy
    assert set(result["test"]) == {"accuracy", "macro_f1", "n"}
    assert result["config"]["data"]["task"] == "bigbench"
