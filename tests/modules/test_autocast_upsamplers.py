"""Every upsampler of ``sapa.list_upsamplers()`` trains under ``torch.autocast``: float32
parameters and inputs, forward inside autocast, backward outside, finite gradients for the
inputs and every parameter.

Output dtype: an upsampler whose last step is one of sapa's ops (SAPA's variants, CARAFE, A2U)
or a convolution returns the autocast dtype, as a convolution does (docs/operator.md); the
others return float32 on the CPU, what PyTorch's own autocast rules give their last op
(interpolation of the float32 input, grid_sample, arithmetic that promotes to float32). CUDA
runs where a GPU is present, with ``torch.amp.GradScaler``.
"""
from __future__ import annotations

import pytest
import torch

from sapa import build_upsampler, list_upsamplers
from sapa.modules.factory import is_guided

# upsamplers whose CPU autocast output is float32; every other one returns the autocast dtype
FLOAT32_ON_CPU = {"nearest", "bilinear", "dysample", "fade", "indexnet-hin", "indexnet-m2o"}


def _step(name, device, dtype, scaler=None):
    torch.manual_seed(0)
    up = build_upsampler(name, 8, 8).to(device)
    x = torch.randn(2, 8, 5, 6, device=device, requires_grad=True)
    guide = torch.randn(2, 8, 10, 12, device=device, requires_grad=True)
    with torch.autocast(device, dtype=dtype):
        out = up(x, guide) if is_guided(name) else up(x)
        loss = out.float().square().mean()
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return up, out, [x] + ([guide] if is_guided(name) else [])


@pytest.mark.parametrize("name", list_upsamplers())
def test_cpu_bfloat16_autocast(name):
    up, out, inputs = _step(name, "cpu", torch.bfloat16)
    assert out.shape == (2, 8, 10, 12)
    assert out.dtype == (torch.float32 if name in FLOAT32_ON_CPU else torch.bfloat16)
    assert torch.isfinite(out).all()
    for t in [*inputs, *up.parameters()]:
        if t.requires_grad:
            assert t.dtype == torch.float32
            assert t.grad is not None and t.grad.dtype == torch.float32, name
            assert torch.isfinite(t.grad).all(), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA autocast)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list_upsamplers())
def test_cuda_autocast_with_grad_scaler(name, dtype):
    scaler = torch.amp.GradScaler("cuda")
    up, out, inputs = _step(name, "cuda", dtype, scaler)
    if name not in FLOAT32_ON_CPU:
        assert out.dtype == dtype
    for t in [*inputs, *up.parameters()]:
        if t.requires_grad:
            assert torch.isfinite(t.grad).all(), name
