"""benchmarks/meta_test_workers.py on the CPU: the same meta-test with 1 and 2 workers, timed, its results compared."""

from __future__ import annotations

import json

from benchmarks.meta_test_workers import main
from tests.meta.test_split import write_task


def test_each_worker_count_is_timed_and_gives_the_same_results(tmp_path, tiny_model_dir):
    write_task(tmp_path / "tasks" / "films", 20, "the film was")
    report = main([str(tiny_model_dir), str(tmp_path / "tasks" / "films"), "--workers", "1", "2", "--seeds", "0", "1",
                   "--steps", "2", "--n-test", "6", "--device", "cpu", "--out", str(tmp_path / "workers.json"),
                   "--more", "--shots", "4", "--n-dev", "2", "--eval-every", "1", "--batch-size", "2",
                   "--max-length", "48"])
    assert [c["workers"] for c in report["counts"]] == [1, 2]
    for count in report["counts"]:
        assert count["units"] == 2 and count["seconds"] > 0 and count["same_results_as_first"] is True
    assert report["counts"][0]["speed_up"] == 1.0
    assert json.loads((tmp_path / "workers.json").read_text()) == report
