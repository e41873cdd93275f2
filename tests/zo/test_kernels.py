"""The fused kernels compute what the torch path computes (interpreter on CPU, compiled on GPU)."""

import pytest
import torch

from zofo import zo
from zofo.zo import ops

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
