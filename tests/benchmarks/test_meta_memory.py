"""benchmarks/meta_memory.py on the CPU: both processes run, FO-LoRA takes exactly the batches Bilevel ZOFO drew
(one step each), and the report is written (no memory is recorded without CUDA)."""

from __future__ import annotations

import json

from benchmarks.meta_memory import main
from tests.meta.test_metatrain import write_split


def test_fo_lora_steps_on_every_batch_the_meta_step_drew(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    main(["--model", str(tiny_model_dir), "--split", str(write_split(tmp_path)), "--out", str(out), "--batch-size",
          "2", "--steps", "2", "--tasks-per-step", "2", "--lower-steps", "2", "--max-length", "32", "--device", "cpu"])
    drawn = json.loads((out / "bilevel-zofo.json").read_text())["batches"]
    assert len(drawn) == 2 * 2 * (2 + 2)  # steps x T x (K lower + B_f + B_g)
    assert [level for _, level in drawn[:3]] == ["lower", "lower", "lower"]
    summary = json.loads((out / "meta_memory.json").read_text())
    assert summary["fo-lora"]["steps"] == len(drawn) == summary["batches"]
    assert summary["ratio_bilevel_over_fo_lora"] is None
    assert "| multi-task FO-LoRA |" in (out / "meta_memory.md").read_text()
