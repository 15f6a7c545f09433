"""The upsampler registry: ``build_upsampler``, ``list_upsamplers``, ``is_guided``.

The per-name tests run over whatever is registered, so a newly registered upsampler is held
to the same contract without editing this file:

- ``build_upsampler(name, C, guide_channels=Cg, scale_factor=s)`` refuses a ``scale_factor``
  that is not a positive int, and for a positive int either raises a ``ValueError`` naming
  ``scale_factor`` (the upsampler does not support that factor; every one supports 2) or
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

# the zoo: the paper's baselines and every SAPA variant
ZOO = (
    "nearest", "bilinear", "deconv", "pixelshuffle", "carafe", "indexnet-hin", "indexnet-m2o",
    "a2u", "fade", "dysample", "sapa-i", "sapa-b", "sapa-p", "sapa-g", "sapa-d",
)
GUIDE_FREE = ("nearest", "bilinear", "deconv", "pixelshuffle", "carafe", "dysample")
REGISTERED = sapa.list_upsamplers()
C = 16  # channels of x and of the guide (SAPA-I and IndexNet-M2O need them equal)
B, H, W = 2, 5, 6


def build_or_refuse(name, scale):
    """The module, or ``None`` when the upsampler refuses ``scale`` with a ValueError that names
    ``scale_factor`` (which no upsampler may do for 2)."""
    torch.manual_seed(0)
    try:
        return sapa.build_upsampler(name, C, guide_channels=C, scale_factor=scale)
    except ValueError as err:
        if "scale_factor" not in str(err) or scale == 2:
            raise
        return None


def inputs(scale, requires_grad=False):
    x = torch.randn(B, C, H, W, requires_grad=requires_grad)
    guide = torch.randn(B, C, scale * H, scale * W, requires_grad=requires_grad)
    return x, guide


def test_every_zoo_name_is_registered():
    missing = sorted(set(ZOO) - set(REGISTERED))
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
    up = build_or_refuse(name, scale)
    if up is None:
        return  # the refusal named scale_factor: this upsampler's contract
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
    up = build_or_refuse(name, 2)
    x, _ = inputs(2)
    with pytest.raises(ValueError, match="guide"):
        up(x)
    with pytest.raises(ValueError, match="guide"):
        up(x, None)


@pytest.mark.parametrize("name", REGISTERED)
def test_gradients_reach_every_parameter(name):
    up = build_or_refuse(name, 2)
    x, guide = inputs(2, requires_grad=True)
    out = up(x, guide)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient reaches x"
    for pname, p in up.named_parameters():
        assert p.grad is not None, f"{name}: {pname} is not in the graph"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("bad", [-1, 0, 2.5, 2.0, True, "2", None])
@pytest.mark.parametrize("name", REGISTERED)
def test_bad_scale_factor_is_refused_by_every_upsampler(name, bad):
    # guided upsamplers that take their size from the guide used to accept and ignore these
    with pytest.raises(ValueError, match=r"scale_factor must be a positive int, got "):
        sapa.build_upsampler(name, C, guide_channels=C, scale_factor=bad)


# upsamplers with a backend= option, and the op family it is forwarded to
BACKEND_OPTION = {"sapa-i": "window", "sapa-b": "window", "sapa-p": "window", "sapa-g": "window",
                  "carafe": "window", "a2u": "window", "fade": "window", "sapa-d": "sampled"}


@pytest.mark.parametrize("name", [n for n in REGISTERED if n in BACKEND_OPTION])
def test_unknown_backend_is_refused_at_construction(name):
    from sapa.ops import list_backends

    names = list_backends(BACKEND_OPTION[name])
    for bad in ("gpu", "CPU", "", 1):
        with pytest.raises(ValueError, match="backend must be None or one of") as err:
            sapa.build_upsampler(name, C, guide_channels=C, backend=bad)
        assert str(names) in str(err.value) and repr(bad) in str(err.value)
    for good in names:  # every listed backend is accepted when the module is built
        sapa.build_upsampler(name, C, guide_channels=C, backend=good)
