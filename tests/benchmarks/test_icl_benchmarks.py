"""benchmarks/icl_common_start.py and benchmarks/tokenize_batches.py on the CPU: both variants run and agree, only
the "once" variant runs a common start, and the scoring thresholds and row cache are left as found."""

from __future__ import annotations

import json

from benchmarks import icl_common_start, tokenize_batches
from tests.real_model import smollm2_gguf
from zofo.evaluation import scoring


def test_the_common_start_variant_alone_runs_the_demonstrations_once(tiny_model_dir, shared_data, tmp_path,
                                                                      monkeypatch):
    once = []
    real = scoring._fill_cache

    def counted(model, keyword, input_ids, *args, **kwargs):
        once.append(input_ids.shape[0] == 1)
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
    # warm-up and task each ran "per example" (no one-row forward) then "once" (one one-row forward a batch)
    assert any(once) and not all(once)


def test_tokenizing_is_timed_both_ways_for_every_kind(shared_data, tmp_path):
    """On the real SmolLM2 tokenizer (the benchmark's default model)."""
    smollm2_gguf()
    kept = dict(scoring._ROWS.kept)
    report = tokenize_batches.main(["--tasks", "1", "--n-test", "8", "--repeats", "1", "--out", str(tmp_path)])
    (task, found), = report["tasks"].items()
    assert task == "discourse_marker_prediction" and set(found) == {"zero-shot", "ICL"}
    assert all(t > 0 for kind in found.values() for t in kind.values())
    assert json.loads((tmp_path / "tokenize_batches.json").read_text())["n_test"] == 8
    scoring._ROWS.kept.update(kept)
