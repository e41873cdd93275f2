"""benchmarks/meta_test_unit.py on the CPU: every variant runs a whole unit, the switched-off variant really runs no
shared prompt, and the sharing threshold is put back."""

from __future__ import annotations

from benchmarks.meta_test_unit import KSHOT_LABELS, VARIANTS, main
from tests.benchmarks.profile_files import profiled_counts
from zofo.evaluation import scoring


def test_each_variant_runs_the_unit_and_only_the_shared_ones_share(tiny_model_dir, shared_data, tmp_path,
                                                                     monkeypatch):
    shared_calls = []
    real = scoring.shared_prompt_logits

    def counted(*args, **kwargs):
        shared_calls.append(scoring.SHARE_MIN_TOKENS)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "shared_prompt_logits", counted)
    threshold = scoring.SHARE_MIN_TOKENS
    task = shared_data / "bigbench" / "date_understanding"
    report = main([str(tiny_model_dir), str(task), "--n-test", "8", "--steps", "2", "--device", "cpu",
                   "--out", str(tmp_path / "unit.json")])
    assert scoring.SHARE_MIN_TOKENS == threshold and (tmp_path / "unit.json").is_file()
    got = report["tasks"]["date_understanding"]
    assert list(got) == list(VARIANTS)
    for variant in got.values():
        assert set(variant["seconds"]) == {"zero-shot", "ICL", "k-shot LoRA"}
        assert all(s > 0 for s in variant["seconds"].values())
    assert shared_calls and all(t == threshold for t in shared_calls)  # ICL's 16 demonstrations share; off: never


def test_profile_writes_the_op_tables_of_one_more_kshot_run_with_its_parts(tiny_model_dir, shared_data, tmp_path):
    profile = tmp_path / "profile"
    before = {(owner, attribute): getattr(owner, attribute) for owner, attribute, _ in KSHOT_LABELS}
    report = main([str(tiny_model_dir), str(shared_data / "bigbench" / "date_understanding"), "--n-test", "8",
                   "--steps", "2", "--device", "cpu", "--profile", str(profile),
                   "--python-profile", str(tmp_path / "python.txt"), "--profile-variant", "rows 64, not shared"])
    assert list(report["tasks"]["date_understanding"]) == list(VARIANTS)  # the profiled run is not reported
    assert all(getattr(owner, attribute) is f for (owner, attribute), f in before.items())  # labels taken off
    counts = profiled_counts(profile, "kshot_", "kshot train step")
    assert counts["kshot train step"] == 2 and counts["kshot test eval"] == 1
    assert {"kshot start", "kshot train loop", "kshot dev eval", "kshot finish"} <= set(counts)
    python = (tmp_path / "python.txt").read_text()  # one more k-shot run under cProfile
    assert "Ordered by: internal time" in python and "(kshot_peft)" in python and "(train_loop)" in python
