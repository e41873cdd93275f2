"""benchmarks/zo_step.py's --group-tile option (the benchmark itself needs a GPU)."""

import pytest

pytest.importorskip("triton")

from benchmarks.zo_step import group_tile  # noqa: E402


def test_a_group_tile_names_a_kind_and_a_tile():
    from zofo.zo import kernels

    assert group_tile("rademacher=512,4") == (kernels.RADEMACHER, (512, 4))
    assert group_tile("gaussian=1024,8") == (kernels.GAUSSIAN, (1024, 8))


@pytest.mark.parametrize("spec", ["rademacher", "rademacher=512", "uniform=512,4", "gaussian=300,4", "gaussian=512,3"])
def test_a_malformed_group_tile_says_what_is_expected(spec):
    with pytest.raises(SystemExit, match="--group-tile"):
        group_tile(spec)
