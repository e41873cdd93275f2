"""experiments/regenerate.py and records.py: the tables regenerate from compacted records, byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from experiments import records, regenerate
from experiments.report.runs import load_runs

FIXTURE = Path(__file__).parent / "fixtures" / "results"


def test_the_tables_regenerate_byte_identical_from_a_cut_real_record(tmp_path, capsys):
    results = shutil.copytree(FIXTURE, tmp_path / "results")
    assert regenerate.main(["--results", str(results), "--root", str(results)]) == 0
    assert "5 of 5 listed files byte-identical" in capsys.readouterr().out
    selected = (results / "study" / "selected.md").read_text()  # the numbers of grids-edges3-runs76-78's README
    assert "| copa | fo-prompt | - (only one point run: fo-prompt@lr_upper0.0001) | 1 | 0.625 | 0.610 ± 0.029 | 3 |" \
        in selected
    assert (results / "study" / "dev_curves.png").stat().st_size > 0  # plots regenerate, unchecked


def test_a_table_that_no_longer_matches_its_manifest_fails(tmp_path, capsys):
    results = shutil.copytree(FIXTURE, tmp_path / "results")
    manifest = results / "MANIFEST.sha256"
    manifest.write_text(manifest.read_text().replace("3da3499e", "00000000"))
    assert regenerate.main(["--results", str(results), "--root", str(results)]) == 1
    assert "differs: study/table.md" in capsys.readouterr().out


def write_run(out: Path, name: str, finished: bool) -> None:
    folder = out / name
    folder.mkdir(parents=True)
    (folder / "log.jsonl").write_text('{"phase": "dev", "step": 0, "time": 1.0, "accuracy": 0.5}\n'
                                      '{"phase": "train", "step": 1, "loss": NaN, "step_seconds": 0.1}\n')
    (folder / "placement.json").write_text(json.dumps({"device": "0", "started": 1.0, "ended": 2.0}))
    (folder / "config.yaml").write_text("train:\n  steps: 3\n")
    if finished:
        (folder / "result.json").write_text(json.dumps({"test": {"accuracy": 0.5}, "best_dev": 0.5, "steps": 1,
                                                        "config": {"train": {"steps": 3}}}))


def test_compacted_records_read_back_as_the_folders_and_replace_them(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "rte__mezo__s0", finished=True)
    write_run(runs, "rte__mezo__s1", finished=False)
    (runs / "logs").mkdir()
    (runs / "logs" / "rte__mezo__s1.log").write_text("Traceback\ntorch.OutOfMemoryError: CUDA out of memory\n")
    (runs / "study.yaml").write_text("seeds: [0]\n")
    before = records.read(runs)
    assert [r.get("failure") for r in before] == [None, "torch.OutOfMemoryError: CUDA out of memory"]
    assert "config" not in before[0] and before[1]["config"] == {"train": {"steps": 3}}  # stored once
    target = records.compact(runs)
    assert target.read_bytes() == records.compact(runs).read_bytes()  # no time stamp: same records, same bytes
    assert {"file": "study.yaml", "text": "seeds: [0]\n"} in records.read_lines(target)
    shutil.rmtree(runs)
    assert json.dumps(records.read(runs)) == json.dumps(before)  # a command naming the folder reads its records
    assert [r["seed"] for r in load_runs(runs)] == [0]
