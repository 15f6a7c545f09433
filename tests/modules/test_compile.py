"""``torch.compile`` (inductor) of the SAPA modules when the input size changes.

A channel LayerNorm returns a channels-last ``B x C x H x W`` view; a 1x1 convolution on such
an intermediate made inductor fail with dynamic shapes (``cannot determine truth value of
Relational``). The projections after a norm are ``Pointwise``: a matrix product on that view,
returned NCHW-contiguous.
"""
from __future__ import annotations

import pytest
import torch

import sapa
from sapa.modules.pointwise import Pointwise, is_channels_last_view

SIZES = ((4, 5), (6, 7))


def test_norm_then_projection_compiles_with_dynamic_shapes():
    torch.manual_seed(0)
    m = sapa.SAPA(8, variant="B", embed_dim=4)

    def key(x):
        return m.k(m.norm_x(x))

    compiled = torch.compile(key, dynamic=True, fullgraph=True)
    with torch.no_grad():
        for h, w in SIZES:
            x = torch.randn(2, 8, h, w)
            torch.testing.assert_close(compiled(x), key(x))


def test_pointwise_is_the_1x1_convolution_in_either_layout():
    torch.manual_seed(0)
    proj = Pointwise(6, 4)
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    proj = proj.double()
    want = torch.nn.functional.conv2d(x, proj.weight, proj.bias)
    channels_last = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert is_channels_last_view(channels_last) and not is_channels_last_view(x)
    torch.testing.assert_close(proj(x), want, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(proj(channels_last), want, rtol=1e-13, atol=1e-13)
    assert proj(channels_last).is_contiguous()  # no channels-last view leaves the module
    assert set(proj.state_dict()) == {"weight", "bias"} and proj.weight.shape == (4, 6, 1, 1)


# the official SAPA-G (its value projection goes through norms.project_normalized's autograd
# function in eager, which Dynamo could not trace once it made the norm's eps a symbolic float)
# runs in the default suite, the rest are slow
@pytest.mark.parametrize("name, kwargs", [
    pytest.param("sapa-i", {}, marks=pytest.mark.slow),
    pytest.param("sapa-b", {}, marks=pytest.mark.slow),
    pytest.param("sapa-p", {}, marks=pytest.mark.slow),
    pytest.param("sapa-g", {}, marks=pytest.mark.slow),
    ("sapa-g", {"decoder_query": "official", "out_channels": 4}),
    pytest.param("sapa-d", {"norm": "layer", "high_offset": False}, marks=pytest.mark.slow),
])
def test_every_variant_compiles_with_dynamic_shapes(name, kwargs):
    torch.manual_seed(0)
    m = sapa.build_upsampler(name, 8, 8, kernel_size=3, embed_dim=4, **kwargs) if name != "sapa-d" \
        else sapa.build_upsampler(name, 8, 8, embed_dim=4, **kwargs)
    compiled = torch.compile(m, dynamic=True)
    for h, w in SIZES:
        x = torch.randn(2, 8, h, w, requires_grad=True)
        guide = torch.randn(2, 8, 2 * h, 2 * w, requires_grad=True)
        out = compiled(x, guide)
        torch.testing.assert_close(out, m(x, guide), rtol=1e-4, atol=1e-5)
        out.sum().backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(guide.grad).all()
