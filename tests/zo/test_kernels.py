"""The fused kernels compute what the torch path computes (interpreter on CPU, compiled on GPU)."""

import pytest
import torch

pytest.importorskip("triton", reason="the kernel tests need triton (its CPU interpreter where there is no GPU)")

from zofo import zo  # noqa: E402
from zofo.zo.kernels import ops  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _ulp_bf16(x: torch.Tensor) -> torch.Tensor:
    return torch.finfo(torch.bfloat16).eps * x.float().abs().clamp_min(1e-30)


@pytest.mark.parametrize("start", [0, 5, 64])
def test_rademacher_bits_identical(start):
    x = torch.randn(300, 7, device=DEV)
    a = ops.perturbed_copy(x, 99, 1234, 0.25, "rademacher", start, backend="torch")
    b = ops.perturbed_copy(x, 99, 1234, 0.25, "rademacher", start, backend="triton")
    assert torch.equal(a, b)


@pytest.mark.parametrize("start", [0, 6])
def test_gaussian_values_close(start):
    zero = torch.zeros(4099, device=DEV)
    a = ops.perturbed_copy(zero, 7, 42, 1.0, "gaussian", start, backend="torch")
    b = ops.perturbed_copy(zero, 7, 42, 1.0, "gaussian", start, backend="triton")
    torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-5)  # same Philox bits; log/cos/sin up to rounding


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_update_matches_torch_path(direction, dtype):
    x = torch.randn(513, 9, device=DEV).to(dtype)
    a, b = x.clone(), x.clone()
    args = (17, [1, 2, 3], [1e-3, -2e-3, 5e-4], 0.999, direction, 3)
    ops.sgd_update_(a, *args, backend="torch")
    ops.sgd_update_(b, *args, backend="triton")
    torch.testing.assert_close(b.float(), a.float(), atol=1e-6, rtol=1e-6)  # SR bits identical


def test_round_matches_torch_path():
    y = torch.randn(5000, device=DEV)
    a = ops.round_to(y, torch.bfloat16, 4, 5, backend="torch")
    b = ops.round_to(y, torch.bfloat16, 4, 5, backend="triton")
    assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("direction", zo.DIRECTIONS)
def test_compiled_kernel_matches_cpu(direction):
    x = torch.randn(1 << 16)
    cpu = ops.perturbed_copy(x, 3, 77, 0.5, direction, backend="torch")
    gpu = ops.perturbed_copy(x.cuda(), 3, 77, 0.5, direction, backend="triton")
    tol = 0 if direction == "rademacher" else 2e-5
    torch.testing.assert_close(gpu.cpu(), cpu, atol=tol, rtol=tol)
    w = torch.randn(1 << 16).bfloat16()
    a, b = w.clone(), w.cuda()
    ops.sgd_update_(a, 3, [5, 6], [1e-4, 2e-4], 1.0, direction, backend="torch")
    ops.sgd_update_(b, 3, [5, 6], [1e-4, 2e-4], 1.0, direction, backend="triton")
    assert (b.cpu().float() - a.float()).abs().le(_ulp_bf16(a) * 1.01).all()  # SR bits equal; u to rounding


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
@pytest.mark.parametrize("start", [0, 8, 5])
def test_full_and_partial_superblocks(direction, start):
    """Sizes spanning whole super-blocks (unmasked path) and ragged ends; several tile widths."""
    from zofo.zo.kernels import triton as kernels

    n = 2 * 32768 + 100
    x = torch.randn(n, device=DEV)  # float32: the interpreter truncates to bf16 where CUDA rounds
    ref = ops.perturbed_copy(x, 5, 9, 0.5, direction, start, backend="torch")
    seed, scale = torch.tensor([9], device=DEV), torch.tensor([0.5], device=DEV)
    kind = zo.directions.KINDS[direction]
    for tile in [(256, 4), (1024, 8)]:
        out = torch.full_like(x, float("nan"))
        kernels.perturb(x, out, 5, seed, scale, kind, start, fast=False, tile=tile)
        tol = 0 if direction == "rademacher" else 1e-2
        torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
def test_grouped_equals_per_tensor(direction):
    """One multi-tensor launch == per-tensor launches == torch path, for ragged sizes and dtypes."""
    shapes = [(37, 3), (4096,), (1,), (70000,), (33, 33)]
    xs = [torch.randn(s, device=DEV).bfloat16() for s in shapes] + [torch.randn(5, 7, device=DEV)]
    keys = [zo.tensor_key(f"t{i}") for i in range(len(xs))]
    args = (123, 0.25, direction)
    per = [ops.perturbed_copy(x, k, *args, backend="triton") for x, k in zip(xs, keys, strict=True)]
    grouped = ops.perturbed_copies(xs, keys, *args, backend="triton")
    torched = ops.perturbed_copies(xs, keys, *args, backend="torch")
    for p, g, t in zip(per, grouped, torched, strict=True):
        assert torch.equal(p, g)
        exact = direction == "rademacher" and (g.dtype == torch.float32 or DEV == "cuda")  # interp truncates
        tol = 0 if exact else 1e-2
        torch.testing.assert_close(t.float(), g.float(), atol=tol, rtol=tol)
    ws = [x.clone() for x in xs]
    ops.sgd_update_many_(ws, keys, [1, 2], [1e-3, -2e-3], 0.99, direction, backend="triton")
    for x, w, k in zip(xs, ws, keys, strict=True):
        one = x.clone()
        ops.sgd_update_(one, k, [1, 2], [1e-3, -2e-3], 0.99, direction, backend="triton")
        assert torch.equal(one, w)


def test_direction_group_equals_slices():
    keys, numels, starts = [3, 4, 5], [10, 5000, 40000], [0, 7, 1024]
    for d in zo.DIRECTIONS:
        got = zo.directions.direction_group(8, keys, numels, d, starts=starts)
        for g, k, n, s in zip(got, keys, numels, starts, strict=True):
            assert torch.equal(g, zo.direction_slice(8, k, s, s + n, d))


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
@pytest.mark.parametrize("two_sided", [True, False])
def test_probed_update_matches_torch_path(direction, two_sided):
    """The fused update recomputes R(theta +- eps u) in registers as the probes did."""
    gen = torch.Generator().manual_seed(3)
    x = (0.1 + 0.2 * torch.rand(4099, generator=gen)).to(torch.bfloat16).to(DEV)
    probed = zo.Probed(1e-3, two_sided)
    a, b = x.clone(), x.clone()
    args = (17, [1, 2, 3], [1e-3, -2e-3, 5e-4], 0.999, direction, 3)
    ops.sgd_update_(a, *args, backend="torch", probed=probed)
    ops.sgd_update_(b, *args, backend="triton", probed=probed)
    # CUDA's fast sin/cos moves Gaussian u by ~1e-5, which can flip R(theta + eps u) at a rounding tie
    allowed = 1e-3 if DEV == "cuda" and direction == "gaussian" else 0.0
    assert (a != b).float().mean() <= allowed
    plain = x.clone()
    ops.sgd_update_(plain, *args, backend="triton")
    assert not torch.equal(plain, b)  # v is not u: the flag reached the kernel


@pytest.mark.parametrize("direction", ["gaussian", "rademacher"])
def test_probed_grouped_update_equals_per_tensor(direction):
    xs = [(0.1 + 0.2 * torch.rand(n)).to(torch.bfloat16).to(DEV) for n in (300, 4096 + 7, 64, 32 * 1024 + 5)]
    keys, probed = [4, 5, 6, 7], zo.Probed(1e-3, True)
    grouped = [x.clone() for x in xs]
    ops.sgd_update_many_(grouped, keys, [9, 10], [1e-3, 2e-3], 1.0, direction, backend="triton", probed=probed)
    for x, k, g in zip(xs, keys, grouped, strict=True):
        one = x.clone()
        ops.sgd_update_(one, k, [9, 10], [1e-3, 2e-3], 1.0, direction, backend="torch", probed=probed)
        torch.testing.assert_close(g.float(), one.float(), atol=0, rtol=0)


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
def test_probed_update_uses_the_probe_kernels_copies(direction):
    """The fused update's v, recomputed in registers, is the v of the copies the probe kernel made (on CUDA
    this checks that both kernels compile R(theta + eps u) to the same bits)."""
    x = (0.1 + 0.2 * torch.rand(1 << 14, generator=torch.Generator().manual_seed(4))).bfloat16().to(DEV)
    probed, key, seed, coef = zo.Probed(1e-3, True), 21, 5, 3e-4
    v = ops.probed_direction(x, key, seed, probed, direction, backend="triton")
    want = zo.stochastic_round(x.float() - coef * v, torch.bfloat16, seed, key)
    got = x.clone()
    ops.sgd_update_(got, key, [seed], [coef], 1.0, direction, backend="triton", probed=probed)
    assert torch.equal(got, want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["gaussian", "gaussian16"])
def test_fast_math_normals_match_exact_ones(kind):
    # fast log (with its series near u1 = 1) and fast sin/cos against the exact kernel, over 4M normals,
    # so that the tail u1 -> 1 (r -> 0), where a bare __log2f is off by ~1e-4, is well sampled
    from zofo.zo.directions import KINDS
    from zofo.zo.kernels import triton as kernels

    seed, one = torch.tensor([11], device="cuda"), torch.tensor([1.0], device="cuda")
    fast, exact = (torch.empty(1 << 22, device="cuda") for _ in range(2))
    kernels.perturb(None, fast, 5, seed, one, KINDS[kind], fast=True)
    kernels.perturb(None, exact, 5, seed, one, KINDS[kind], fast=False)
    torch.testing.assert_close(fast, exact, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("direction", zo.DIRECTIONS)
def test_evict_first_copies_hold_the_same_values(direction, monkeypatch):
    """`kernels.EVICT_FIRST` only changes cache hints: its branch of the kernels writes the same copies."""
    from zofo.zo.kernels import triton as kernels

    xs = [torch.randn(s, device=DEV).bfloat16() for s in [(37, 3), (70000,), (33, 33)]]
    keys = [zo.tensor_key(f"t{i}") for i in range(len(xs))]
    copies = {}
    for evict in (False, True):
        monkeypatch.setattr(kernels, "EVICT_FIRST", evict)
        grouped = ops.perturbed_copies(xs, keys, 123, 0.25, direction, backend="triton")
        single = ops.perturbed_copy(xs[1], keys[1], 123, 0.25, direction, backend="triton")
        copies[evict] = [*grouped, single]
    assert all(torch.equal(a, b) for a, b in zip(copies[False], copies[True], strict=True))
