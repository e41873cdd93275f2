import math

import pytest
import torch

from zofo import zo
from zofo.zo.kernels import philox as px


def test_philox_matches_triton_randint4x():
    tl_random = pytest.importorskip("triton.language.random")  # noqa: F841
    import triton
    import triton.language as tl

    from zofo.zo.kernels import triton as kernels  # (interpreter set up by conftest)

    @triton.jit
    def k(out_ptr, seed, N: tl.constexpr):
        offs = tl.arange(0, N).to(tl.int64) + 4294967290  # crosses 2**32: exercises the high counter word
        a, b, c, d = tl.randint4x(seed, offs)
        tl.store(out_ptr + tl.arange(0, N) * 4 + 0, a.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + tl.arange(0, N) * 4 + 1, b.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + tl.arange(0, N) * 4 + 2, c.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + tl.arange(0, N) * 4 + 3, d.to(tl.int64) & 0xFFFFFFFF)

    if not torch.cuda.is_available() and not kernels.interpreting():
        pytest.skip("no CUDA and no interpreter")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    seed = zo.philox_seed(123456789, zo.tensor_key("layer.weight"))
    out = torch.empty(16 * 4, dtype=torch.int64, device=dev)
    k[(1,)](out, seed, N=16)
    ref = torch.stack(px.randint4x(seed, torch.arange(16, dtype=torch.int64) + 4294967290), dim=1).reshape(-1)
    assert torch.equal(out.cpu(), ref)


def test_step_seed_is_deterministic_and_distinct():
    seeds = {zo.step_seed(7, s, p) for s in range(50) for p in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**32 for s in seeds)
    assert zo.step_seed(7, 3, 1) == zo.step_seed(7, 3, 1) != zo.step_seed(8, 3, 1)


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
def test_slice_of_shard_equals_slice_of_whole(direction):
    key = zo.tensor_key("model.layers.0.mlp.up_proj.weight")
    whole = zo.direction_slice(5, key, 0, 1000, direction)
    for start, end in [(0, 1), (3, 97), (31, 33), (500, 1000), (999, 1000)]:
        assert torch.equal(zo.direction_slice(5, key, start, end, direction), whole[start:end])


def test_direction_depends_on_name_not_order():
    t = torch.empty(10, 10)
    a = zo.direction_like(t, 1, zo.tensor_key("a"))
    assert torch.equal(a, zo.direction_like(t, 1, zo.tensor_key("a")))
    assert not torch.equal(a, zo.direction_like(t, 1, zo.tensor_key("b")))
    assert not torch.equal(a, zo.direction_like(t, 2, zo.tensor_key("a")))


def test_moments():
    for kind in ("gaussian", "gaussian16"):
        g = zo.direction_slice(3, 11, 0, 200_000, kind)
        assert abs(g.mean()) < 0.01 and abs(g.var() - 1) < 0.02, kind
        assert abs((g**4).mean() - 3) < 0.1, kind  # a normal's fourth moment, so not merely unit variance
    r = zo.direction_slice(3, 11, 0, 200_000, "rademacher")
    assert set(r.unique().tolist()) == {-1.0, 1.0} and abs(r.mean()) < 0.01


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="valid: gaussian, gaussian16, rademacher"):
        zo.direction_slice(0, 0, 0, 4, "uniform")


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
def test_lane_layout(direction):
    """Element e takes lane (e // LANE_B) % L of counter (e // (L*LANE_B)) * LANE_B + e % LANE_B."""
    from zofo.zo import directions as d

    pseed, lanes, b = zo.philox_seed(2, 3), d.lanes(direction), d.LANE_B
    e = torch.tensor([0, 1, b - 1, b, 3 * b + 5, lanes * b, lanes * b + 7 * b + 9])
    counter, lane = (e // (lanes * b)) * b + e % b, (e // b) % lanes
    whole = zo.direction_slice(2, 3, 0, int(e.max()) + 1, direction)
    if direction in ("gaussian", "gaussian16"):
        normals = (px.randn4x if direction == "gaussian" else px.randn8x)(pseed, counter)
        want = torch.stack(normals)[lane, torch.arange(len(e))]
    else:
        want = ((px.randint4x(pseed, counter)[0] >> lane) & 1).float() * 2 - 1
    assert torch.equal(whole[e], want)


def philox_python(seed: int, counter: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Philox4x32-10 in Python integers (Salmon et al.), the independent reference of ``px.philox``."""
    (c0, c1, c2, c3), k0, k1 = counter, seed & 0xFFFFFFFF, seed >> 32
    for _ in range(10):
        pb, pa = c2 * px.PHILOX_B, c0 * px.PHILOX_A
        c0, c1, c2, c3 = (pb >> 32) ^ c1 ^ k0, pb & 0xFFFFFFFF, (pa >> 32) ^ c3 ^ k1, pa & 0xFFFFFFFF
        k0, k1 = (k0 + px.PHILOX_KEY_A) & 0xFFFFFFFF, (k1 + px.PHILOX_KEY_B) & 0xFFFFFFFF
    return c0, c1, c2, c3


@pytest.mark.parametrize("seed", [0, 12345, (0x7FFFFFFF << 32) | 0xFFFFFFFF])
def test_philox_against_python_integers(seed):
    """The int64 tensor arithmetic (wrapped products, high words masked late) equals exact integer Philox,
    words near 2**32 included, for a scalar key and for a per-counter key tensor."""
    words = torch.cat([torch.tensor([0, 1, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1]),
                       torch.randint(0, 2**32, (300,), generator=torch.Generator().manual_seed(seed % 97))])
    hi = words.flip(0)
    got = torch.stack(px.philox(seed, words, hi), dim=1).tolist()
    assert got == [list(philox_python(seed, (int(a), int(b), 0, 0))) for a, b in zip(words, hi, strict=True)]
    keyed = torch.stack(px.philox(torch.full_like(words, seed), words, hi), dim=1).tolist()
    assert keyed == got


def test_gaussian16_is_box_muller_on_the_halves_of_each_philox_word():
    """Eight normals per counter, from exact-integer Philox and float64 Box-Muller: word j's low half is u1 and
    its high half u2, each (h + 1/2) / 2**16; normals 2j, 2j+1 are r cos, r sin."""
    seed, counters = zo.philox_seed(4, 21), [0, 1, 777, 2**31 + 5]
    got = torch.stack(px.randn8x(seed, torch.tensor(counters)), dim=1)
    for row, c in zip(got.tolist(), counters, strict=True):
        want = []
        for word in philox_python(seed, (c & 0xFFFFFFFF, c >> 32, 0, 0)):
            u1, u2 = ((word & 0xFFFF) + 0.5) / 65536, ((word >> 16) + 0.5) / 65536
            r = math.sqrt(-2 * math.log(u1))
            want += [r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)]
        assert row == pytest.approx(want, abs=2e-6)
    assert got.abs().max() < math.sqrt(-2 * math.log(0.5 / 65536)) + 1e-5  # the bound the docstring states



def test_the_kernels_half_word_uniforms_equal_the_definition_for_every_half():
    """The kernel forms (h + 1/2) / 2**16 as the float with h in its top mantissa bits, minus (1 - 2**-17),
    to skip an int -> float conversion: exact for all 2**16 halves."""
    h = torch.arange(65536, dtype=torch.int64)
    trick = ((h << 7) | 0x3F800000).to(torch.int32).view(torch.float32) - torch.tensor(0.99999237060546875)
    low, high = px.half_uniforms(h | (h << 16))
    assert torch.equal(trick, low) and torch.equal(trick, high)
