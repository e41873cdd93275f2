"""benchmarks/icl_common_start.py and benchmarks/tokenize_batches.py on the CPU: both variants run and agree, only
the "once" variant runs a common start, and the scoring threshold is left as found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import icl_common_start, tokenize_batches
from tests.real_model import smollm2_gguf
from zofo.evaluation import scoring


def test_the_common_start_variant_alone_runs_the_demonstrations_once(tiny_model_dir, shared_data, tmp_path,
                                                                      monkeypatch):
    fills = []  # per cache fill: (its rows, the threshold in force: 0 in the "once" variant, out of reach otherwise)
    real = scoring._fill_cache

    def counted(model, keyword, input_ids, *args, **kwargs):
        fills.append((input_ids.shape[0], scoring.COMMON_MIN_TOKENS))
        return real(model, keyword, input_ids, *args, **kwargs)

    monkeypatch.setattr(scoring, "_fill_cache", counted)
    monkeypatch.setattr(scoring, "COMMON_MIN_TOKENS", 0)  # the tiny model's 8 examples save fewer than 2**13 tokens
    out = tmp_path / "icl.json"
    report = icl_common_start.main([str(tiny_model_dir), str(shared_data / "bigbench" / "date_understanding"),
                                    "--n-test", "8", "--repeats", "1", "--device", "cpu", "--out", str(out)])
    assert scoring.COMMON_MIN_TOKENS == 0 and json.loads(out.read_text()) == json.loads(json.dumps(report))
    found = report["tasks"]["date_understanding"]
    assert found["n_test"] == 8 and found["predictions_differing"] == 0
    assert found["largest_score_difference"] < 1e-4 and len(set(found["accuracy"].values())) == 1
    assert all(s > 0 for seconds in found["seconds"].values() for s in seconds)
    once = {threshold for rows, threshold in fills if rows == 1}  # the date_understanding batches hold 8 examples
    assert once == {0} and {threshold for rows, threshold in fills if rows == 8} == {0, 1 << 62}


def test_tokenizing_is_timed_both_ways_for_every_kind(shared_data, tmp_path):
    """On the real SmolLM2 tokenizer (the benchmark's default model); the row cache is put back as it was."""
    smollm2_gguf()
    kept, tokens = dict(scoring._ROWS.kept), scoring._ROWS.tokens
    try:
        report = tokenize_batches.main(["--tasks", "1", "--n-test", "8", "--repeats", "1", "--out", str(tmp_path)])
    finally:
        scoring._ROWS.clear()
        scoring._ROWS.kept.update(kept)
        scoring._ROWS.tokens = tokens
    (task, found), = report["tasks"].items()
    assert task == "discourse_marker_prediction" and set(found) == {"zero-shot", "ICL"}
    assert all(t > 0 for kind in found.values() for t in kind.values())
    assert json.loads((tmp_path / "tokenize_batches.json").read_text())["n_test"] == 8


@pytest.mark.parametrize("script, flag", [("icl_common_start.py", "--repeats"), ("icl_common_start.py", "--n-test"),
                                          ("tokenize_batches.py", "--tasks"), ("tokenize_batches.py", "--repeats")])
def test_a_count_below_one_is_refused_by_name_with_exit_code_2(script, flag, tmp_path):
    """As a process: the flag and its value named, before any model or task is loaded."""
    root = Path(__file__).resolve().parents[2]
    models = ["smollm2-135m", str(tmp_path)] if script == "icl_common_start.py" else []
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), *models, flag, "0"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert done.returncode == 2 and f"{flag} 0: give 1 or more" in done.stderr
