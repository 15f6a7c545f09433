"""The upsampler registry: ``build_upsampler``, ``list_upsamplers``, ``is_guided``.

The per-name tests run over whatever is registered, so a newly registered upsampler is held
to the same contract without editing this file:

- ``build_upsampler(name, C, guide_channels=Cg, scale_factor=s)`` either raises a
  ``ValueError`` naming ``scale_factor`` (the upsampler does not support that factor) or
  returns a module with ``forward(x, guide=None) -> B x C x sH x sW``;
- guided upsamplers take their output size from the guide and raise a ``ValueError`` that
  mentions the guide when called without one; guide-free ones accept and ignore a guide;
- a gradient reaches every parameter.
"""
from __future__ import annotations

import pytest
import torch

import sapa
from sapa.modules import is_guided, register_upsampler

# every name of issue 5
ISSUE_NAMES = (
    "nearest", "bilinear", "deconv", "pixelshuffle", "carafe", "indexnet-hin", "indexnet-m2o",
    "a2u", "fade", "dysample", "sapa-i", "sapa-b", "sapa-p", "sapa-g", "sapa-d",
)
GUIDE_FREE = ("nearest", "bilinear", "deconv", "pixelshuffle", "carafe", "dysample")
REGISTERED = sapa.list_upsamplers()
C = 16  # channels of x and of the guide (SAPA-I and IndexNet-M2O need them equal)
B, H, W = 2, 5, 6


def build_or_skip(name, scale):
    """The module, or a skip when the upsampler rejects ``scale`` with a ValueError that says so."""
    torch.manual_seed(0)
    try:
        return sapa.build_upsampler(name, C, guide_channels=C, scale_factor=scale)
    except ValueError as err:
        if "scale_factor" not in str(err):
            raise
        pytest.skip(f"{name} does not support scale_factor={scale}: {err}")


def inputs(scale, requires_grad=False):
    x = torch.randn(B, C, H, W, requires_grad=requires_grad)
    guide = torch.randn(B, C, scale * H, scale * W, requires_grad=requires_grad)
    return x, guide


def test_every_issue_name_is_registered():
    """Passes once every part of the zoo is in (parts are written in parallel)."""
    missing = sorted(set(ISSUE_NAMES) - set(REGISTERED))
    assert not missing, f"not registered yet: {missing}"


def test_list_upsamplers_sorted_and_unique():
    names = sapa.list_upsamplers()
    assert names == sorted(set(names))
    names.append("not-an-upsampler")  # a copy: callers cannot edit the registry through it
    assert "not-an-upsampler" not in sapa.list_upsamplers()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        sapa.build_upsampler("bicubic", C)
    msg = str(err.value)
    assert "'bicubic'" in msg
    for name in REGISTERED:
        assert name in msg
    for bad in (None, 3, "Nearest", ""):
        with pytest.raises(ValueError, match="unknown upsampler"):
            sapa.build_upsampler(bad, C)
    with pytest.raises(ValueError, match="unknown upsampler"):
        is_guided("bicubic")


def test_duplicate_registration_is_refused():
    before = sapa.list_upsamplers()
    with pytest.raises(ValueError, match="already registered"):
        register_upsampler("nearest", guided=False)(lambda *a, **k: None)
    assert sapa.list_upsamplers() == before
    assert not is_guided("nearest")


def test_guide_free_names():
    for name in GUIDE_FREE:
        if name in REGISTERED:
            assert not is_guided(name), name
    for name in REGISTERED:
        if name.startswith("sapa-"):
            assert is_guided(name), name


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", REGISTERED)
def test_build_and_shapes(name, scale):
    up = build_or_skip(name, scale)
    assert isinstance(up, torch.nn.Module)
    x, guide = inputs(scale)
    with torch.no_grad():
        out = up(x, guide)
        assert out.shape == (B, C, scale * H, scale * W)
        assert torch.isfinite(out).all()
        if not is_guided(name):
            torch.testing.assert_close(up(x), out, rtol=0, atol=0)  # the guide is ignored


@pytest.mark.parametrize("name", [n for n in REGISTERED if is_guided(n)])
def test_guided_needs_a_guide(name):
    up = build_or_skip(name, 2)
    x, _ = inputs(2)
    with pytest.raises(ValueError, match="guide"):
        up(x)
    with pytest.raises(ValueError, match="guide"):
        up(x, None)


@pytest.mark.parametrize("name", REGISTERED)
def test_gradients_reach_every_parameter(name):
    up = build_or_skip(name, 2)
    x, guide = inputs(2, requires_grad=True)
    out = up(x, guide)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient reaches x"
    for pname, p in up.named_parameters():
        assert p.grad is not None, f"{name}: {pname} is not in the graph"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
