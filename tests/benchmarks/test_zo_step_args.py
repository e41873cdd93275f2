"""benchmarks/zo_step.py's --group-tile option (the benchmark itself needs a GPU)."""

import pytest

pytest.importorskip("triton")

from benchmarks.zo_step import group_tile  # noqa: E402


def test_a_group_tile_names_a_kind_and_a_tile():
    from zofo.zo.kernels import triton as kernels

    assert group_tile("rademacher=512,4") == (kernels.RADEMACHER, (512, 4))
    assert group_tile("gaussian=1024,8") == (kernels.GAUSSIAN, (1024, 8))


@pytest.mark.parametrize("spec", ["rademacher", "rademacher=512", "uniform=512,4", "gaussian=300,4", "gaussian=512,3"])
def test_a_malformed_group_tile_says_what_is_expected(spec):
    with pytest.raises(SystemExit, match="--group-tile"):
        group_tile(spec)


def test_the_table_gives_each_step_over_the_plain_forward_and_both_forwards():
    from benchmarks.zo_step import table

    row = {"model": "opt-1.3b", "forward_ms": 20.0, "forward_after_ms": 20.5, "graphed_forward_ms": 19.5,
           "forward_peak_gib": 2.0, "reference_ms": 65.0, "zofo_gaussian_ms": 50.0, "zofo_gaussian_peak_gib": 2.02,
           "deferred_gaussian_ms": 47.0, "deferred_rademacher_ms": 43.0}
    header, rule, line = table([row]).splitlines()
    cells = dict(zip(*([c.strip() for c in text.strip("|").split("|")] for text in (header, line)), strict=True))
    assert rule.count("---") == len(cells) == 18
    assert (cells["forward ms, after the steps"], cells["graphed forward ms"]) == ("20.5", "19.5")
    ratios = cells["deferred gauss / fwd"], cells["deferred rad / fwd"], cells["graph gauss / fwd"]
    assert ratios == ("2.35", "2.15", "-")
    assert cells["ref / best zofo"] == f"{65 / 47:.2f}" and cells["peak step / fwd (gauss)"] == "1.010"
