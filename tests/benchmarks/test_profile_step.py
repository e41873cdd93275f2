"""benchmarks/profile_step.py's accounting of kernel intervals (the profiling itself needs a GPU)."""

from benchmarks.profile_step import kind_of, step_breakdown, union_us


def test_union_of_overlapping_intervals():
    assert union_us([(0, 10), (5, 15), (20, 30), (22, 25)]) == 25
    assert union_us([]) == 0


def test_step_breakdown_splits_busy_idle_and_kinds():
    kernels = [("_multi_perturb_kernel", 0, 1000), ("sm90_xmma_gemm_bf16", 1000, 9000),
               ("_multi_update_kernel", 10_000, 12_000),                     # 1 ms idle before it
               ("_multi_perturb_kernel", 20_000, 21_000)]                    # the next step
    rows = step_breakdown(kernels, [(0, 20_000), (20_000, float("inf"))])
    first = rows[0]
    assert (first["wall_ms"], first["busy_ms"], first["idle_ms"]) == (12.0, 11.0, 1.0)
    assert (first["perturb_ms"], first["matmul_ms"], first["update_ms"]) == (1.0, 8.0, 2.0)
    assert rows[1]["wall_ms"] == 1.0 and kind_of("elementwise_kernel") == "other"


def test_reads_kernels_and_step_ranges_from_a_chrome_trace(tmp_path):
    import json

    from benchmarks.profile_step import read_trace

    trace = {"traceEvents": [
        {"cat": "user_annotation", "name": "zo_step", "ts": 100, "dur": 50},
        {"cat": "kernel", "name": "_multi_update_kernel", "ts": 120, "dur": 30},
        {"cat": "cpu_op", "name": "aten::copy_", "ts": 101, "dur": 2}]}
    (tmp_path / "trace.json").write_text(json.dumps(trace))
    assert read_trace(tmp_path / "trace.json") == ([("_multi_update_kernel", 120, 150)], {"zo_step": [(100, 150)]})


def test_deferred_windows_are_divided_per_step_and_named_kernels_compared_with_forwards():
    from benchmarks.profile_step import by_name, extended, name_table

    kernels = [("perturb", 0, 1000), ("gemm", 1000, 3000), ("perturb", 3000, 4000), ("gemm", 4000, 6000),
               ("gemm", 10_000, 12_000)]                                     # a forward
    steps = extended([(0, 10)], 10_000)
    assert steps == [(0, 10_000)]
    assert step_breakdown(kernels, steps, per=2)[0]["perturb_ms"] == 1.0    # two steps in the window
    step, fwd = by_name(kernels, steps, 2), by_name(kernels, [(10_000, 20_000)], 1)
    assert step == {"perturb": [1.0, 1.0], "gemm": [2.0, 1.0]} and fwd == {"gemm": [2.0, 1.0]}
    rows = name_table(step, fwd)
    assert rows[2].startswith("| `gemm` | 2.000 | 4.000 | -2.000 | 1 / 2 |")   # largest difference first
