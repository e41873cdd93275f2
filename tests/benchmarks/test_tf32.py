"""benchmarks/tf32.py on the CPU (where TF32 does not exist): its float32 figures against its float64 reference are
float32 rounding, and the ZO estimate it reports is the central difference it names."""

from __future__ import annotations

import math

from benchmarks.tf32 import main


def test_float32_agrees_with_the_float64_reference_to_float32_rounding(tiny_model_dir, shared_data, tmp_path):
    report = main([str(tiny_model_dir), str(shared_data / "bigbench" / "date_understanding"), "--device", "cpu",
                   "--out", str(tmp_path / "tf32.json")])
    assert report["device"] == "cpu" and (tmp_path / "tf32.json").is_file()
    scale = max(abs(c) for c in report["c_float64"])
    for name in ("float32", "tf32"):  # the CPU ignores the matmul precision: both are exact float32
        got = report[name]
        assert abs(got["loss"] - report["loss_float64"]) < 1e-6 * report["loss_float64"]
        assert got["c_max_abs_error"] < 1e-4 * scale  # float32 losses differ by rounding, divided by 2 eps
        assert got["grad_cosine"] > 1 - 1e-9 and got["grad_relative_error"] < 1e-5
        assert got["step_ms"] is None
    assert report["float32"]["c"] == report["tf32"]["c"] and not any(map(math.isnan, report["c_float64"]))
