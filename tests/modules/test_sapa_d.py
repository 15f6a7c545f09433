"""The SAPA-D module: registration, the authors' structure and defaults, backends, validation."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sapa import build_upsampler, list_upsamplers
from sapa.modules import is_guided
from sapa.modules.sapa_d import SAPAD
from sapa.ops.sampled import sampled_attention


def inputs(b=2, c=32, h=4, w=5, s=2, cg=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    guide = torch.randn(b, cg or c, s * h, s * w, generator=g, dtype=dtype)
    return x, guide


def randomize(module, seed=0):
    """Weights large enough that the offsets move points by whole pixels and beyond the map."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return module


def test_registered_as_guided():
    assert "sapa-d" in list_upsamplers()
    assert is_guided("sapa-d")
    up = build_upsampler("sapa-d", 32, guide_channels=16, scale_factor=2, num_points=4)
    assert isinstance(up, SAPAD) and up.num_points == 4 and up.guide_channels == 16


def test_authors_defaults_and_parameter_count():
    c, cg = 64, 48
    up = build_upsampler("sapa-d", c, guide_channels=cg)
    assert (up.num_points, up.groups, up.embed_dim, up.high_offset, up.norm) == (9, 4, 32, True, "none")
    gd, offsets = 4 * 32, 2 * 4 * 9 * 2**2
    want = (cg * gd + gd) + (c * gd + gd) + (c * offsets + offsets)
    assert sum(p.numel() for p in up.parameters()) == want
    assert up.offset.out_channels == offsets


def test_initialisation_as_the_authors():
    torch.manual_seed(0)
    up = SAPAD(256)
    for conv in (up.q, up.k, up.offset):
        assert torch.count_nonzero(conv.bias) == 0
        assert abs(conv.weight.std().item() - 0.02) < 0.002
        assert abs(conv.weight.mean().item()) < 0.002


def test_forward_is_the_documented_composition():
    x, guide = inputs()
    up = randomize(SAPAD(32, num_points=3, groups=2, embed_dim=4, norm="group"))
    q = up.q(F.group_norm(guide, 32, up.norm_guide.weight, up.norm_guide.bias, 1e-5))
    xn = F.group_norm(x, 32, up.norm_x.weight, up.norm_x.bias, 1e-5)
    off = F.pixel_shuffle(up.offset(xn), 2)
    want = sampled_attention(q, up.k(xn), x, off, groups=2, num_points=3, backend="reference")
    torch.testing.assert_close(up(x, guide), want)


def test_low_offset_shares_offsets_and_takes_any_size():
    x, _ = inputs(h=4, w=5)
    guide = torch.randn(2, 32, 9, 11)  # 2H + 1: real backbones produce such sizes
    up = randomize(SAPAD(32, num_points=3, groups=2, embed_dim=4, high_offset=False))
    assert up.offset.out_channels == 2 * 2 * 3
    q, k, off = up.query_key_offsets(x, guide)
    assert off.shape == (2, 12, 9, 11)
    # output rows 0 and 1 (and columns 0 and 1) come from low-res point 0: same offsets
    torch.testing.assert_close(off[:, :, 1, 1], off[:, :, 0, 0])
    assert up(x, guide).shape == (2, 32, 9, 11)


def test_high_offset_needs_the_exact_scale():
    x, _ = inputs(h=4, w=5)
    up = SAPAD(32)
    with pytest.raises(ValueError, match="high_offset=True.*8x10.*9x11"):
        up(x, torch.randn(2, 32, 9, 11))


def test_starts_close_to_nearest_upsampling():
    # the authors draw the offset weights with std 0.02 and no fixed sampling pattern: the points
    # start within a fraction of a pixel of the projective location ...
    x, guide = inputs(c=64)
    up = SAPAD(64, groups=4)
    _, _, off = up.query_key_offsets(x, guide)
    assert off.abs().mean() < 0.25
    # ... and where the offsets are zero every point reads it, whatever the kernel: nearest
    with torch.no_grad():
        up.offset.weight.zero_()
    torch.testing.assert_close(up(x, guide), F.interpolate(x, scale_factor=2, mode="nearest"))


@pytest.mark.parametrize("normalizer", ["softmax", "sigmoid"])
def test_backends_agree_forward_and_backward(normalizer):
    x, guide = inputs(dtype=torch.float64)
    results = []
    for backend in ("reference", "lean"):
        torch.manual_seed(0)
        up = randomize(SAPAD(32, num_points=5, groups=4, embed_dim=3, normalizer=normalizer,
                             backend=backend)).double()
        xr, gr = x.clone().requires_grad_(), guide.clone().requires_grad_()
        y = up(xr, gr)
        y.square().sum().backward()
        results.append([y, xr.grad, gr.grad] + [p.grad for p in up.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_kernels_and_sampling_locations():
    x, guide = inputs()
    up = randomize(SAPAD(32, num_points=3, groups=2, embed_dim=4))
    kern = up.kernels(x, guide)
    assert kern.shape == (2, 2, 3, 8, 10)
    torch.testing.assert_close(kern.sum(dim=2), torch.ones(2, 2, 8, 10))
    loc = up.sampling_locations(x, guide)
    assert loc.shape == (2, 2, 3, 2, 8, 10)
    # the output is the kernel-weighted sum of the values read at those locations
    _, _, off = up.query_key_offsets(x, guide)
    want = up(x, guide)
    grid = (2 * loc + 1) / torch.tensor([5.0, 4.0]).view(1, 1, 1, 2, 1, 1) - 1
    vs = [F.grid_sample(x.view(4, 16, 4, 5), grid.view(4, 3, 2, 8, 10)[:, p].permute(0, 2, 3, 1),
                        align_corners=False) for p in range(3)]
    got = sum(kern.view(4, 3, 1, 8, 10)[:, p] * vs[p] for p in range(3)).view(2, 32, 8, 10)
    torch.testing.assert_close(got, want)


def test_gradients_reach_every_parameter():
    x, guide = inputs()
    up = randomize(SAPAD(32, num_points=3, groups=2, embed_dim=4, norm="layer"))
    up(x, guide).square().sum().backward()
    for name, p in up.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"in_channels": 30}, ValueError, "divisible by groups"),
        ({"in_channels": 0}, ValueError, "in_channels must be a positive int"),
        ({"num_points": 0}, ValueError, "num_points"),
        ({"groups": 2.0}, ValueError, "groups"),
        ({"norm": "batch"}, ValueError, "norm must be one of"),
        ({"normalizer": "exp"}, ValueError, "normalizer must be one of"),
    ],
)
def test_constructor_validation(kwargs, error, match):
    kwargs = {"in_channels": 32, **kwargs}
    with pytest.raises(error, match=match):
        SAPAD(**kwargs)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda up, x, g: up(x), "needs guide"),
        (lambda up, x, g: up(x[:, :16], g), "in_channels=32"),
        (lambda up, x, g: up(x, g[:, :16]), "guide_channels=32"),
        (lambda up, x, g: up(x, g[:1]), "batch size"),
        (lambda up, x, g: up(x, g[..., :3, :]), "at least as large"),
        (lambda up, x, g: up(x.double(), g), "dtype"),
        (lambda up, x, g: up(x[0], g), "x must be 4-D"),
    ],
)
def test_forward_validation(call, match):
    x, guide = inputs()
    up = SAPAD(32)
    with pytest.raises((ValueError, TypeError), match=match):
        call(up, x, guide)


def test_is_an_nn_module_with_repr():
    up = SAPAD(32, groups=2)
    assert isinstance(up, nn.Module)
    assert "num_points=9" in repr(up) and "groups=2" in repr(up)
