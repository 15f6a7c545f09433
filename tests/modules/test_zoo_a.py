"""Baseline upsamplers, part A: nearest, bilinear, deconv, pixelshuffle, carafe, dysample.

Each learned one is held to an independent, loop-by-loop transcription of its published
forward (mmcv's ``carafe_naive`` kernel for CARAFE, tiny-smart/dysample for DySample, the
definition of a transposed convolution for deconv), with the same weights.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import sapa
from sapa.modules.carafe import CARAFE
from sapa.modules.dysample import DySample
from sapa.modules.interpolation import BilinearUpsample, NearestUpsample
from sapa.modules.learned import Deconv, PixelShuffleUpsampler

NAMES = ("nearest", "bilinear", "deconv", "pixelshuffle", "carafe", "dysample")
FIXED = ("deconv", "pixelshuffle", "carafe", "dysample")
DYSAMPLE_CONFIGS = [(style, dyscope) for style in ("lp", "pl") for dyscope in (False, True)]


def randomize_(module, std=0.5, generator=None):
    """Replace every parameter with N(0, std^2) so that nothing sits at its (near-trivial) init."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return module


def gradcheck_module(module, x, fast_mode=False):
    """``gradcheck`` of ``module(x)`` with respect to ``x`` and every parameter."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps)), (x,))

    return gradcheck(f, (x.detach().clone().requires_grad_(), *params), eps=1e-6, atol=1e-5,
                     fast_mode=fast_mode)


# ---- registry and shapes ---------------------------------------------------------------------

def test_registered_and_guide_free():
    for name in NAMES:
        assert name in sapa.list_upsamplers()
        assert not sapa.modules.is_guided(name)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_shapes(name, scale):
    torch.manual_seed(0)
    up = sapa.build_upsampler(name, 16, scale_factor=scale)
    x = torch.randn(2, 16, 5, 7)
    out = up(x)
    assert out.shape == (2, 16, 5 * scale, 7 * scale)
    # a guide of the exact size is accepted and ignored (any channel count)
    guide = torch.randn(2, 3, 5 * scale, 7 * scale)
    torch.testing.assert_close(up(x, guide), out, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(11, 13), (11, 14), (10, 13), (3, 4)])
def test_interpolation_follows_odd_guide(size):
    x = torch.randn(2, 4, 5, 6)
    guide = torch.randn(2, 1, *size)
    near = NearestUpsample(4)(x, guide)
    bil = BilinearUpsample(4)(x, guide)
    assert near.shape == bil.shape == (2, 4, *size)
    # nearest: integer projective index floor(i' * H / H')
    for i in range(size[0]):
        for j in range(size[1]):
            src = x[:, :, i * 5 // size[0], j * 6 // size[1]]
            torch.testing.assert_close(near[:, :, i, j], src, rtol=0, atol=0)
    torch.testing.assert_close(
        bil, F.interpolate(x, size=size, mode="bilinear", align_corners=False), rtol=0, atol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_interpolation_matches_torch(scale):
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(NearestUpsample(3, scale)(x),
                               F.interpolate(x, scale_factor=scale, mode="nearest"), rtol=0, atol=0)
    torch.testing.assert_close(
        BilinearUpsample(3, scale)(x),
        F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False))


@pytest.mark.parametrize("name", FIXED)
def test_fixed_factor_rejects_other_guide_sizes(name):
    up = sapa.build_upsampler(name, 16, scale_factor=2)
    x = torch.randn(1, 16, 5, 6)
    for size in [(11, 12), (10, 13), (10, 11), (20, 24)]:
        with pytest.raises(ValueError, match="scale_factor=2"):
            up(x, torch.randn(1, 16, *size))


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name):
    up = sapa.build_upsampler(name, 8)
    with pytest.raises(ValueError, match="in_channels=8"):
        up(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="4-D"):
        up(torch.randn(8, 5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        up(torch.ones(1, 8, 5, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        up([[1.0]])
    with pytest.raises(ValueError, match="batch size"):
        up(torch.randn(2, 8, 5, 5), torch.randn(1, 8, 10, 10))
    with pytest.raises(ValueError, match="guide must be 4-D"):
        up(torch.randn(1, 8, 5, 5), torch.randn(8, 10, 10))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [0, -2, 2.0, True, "2"])
def test_bad_scale_factor(name, bad):
    with pytest.raises(ValueError, match="scale_factor"):
        sapa.build_upsampler(name, 8, scale_factor=bad)


def test_bad_options():
    with pytest.raises(ValueError, match="in_channels"):
        sapa.build_upsampler("deconv", 0)
    for name in ("deconv", "pixelshuffle"):
        with pytest.raises(ValueError, match="kernel_size must be odd"):
            sapa.build_upsampler(name, 8, kernel_size=4)
    with pytest.raises(ValueError, match="k_up must be odd"):
        CARAFE(8, k_up=4)
    with pytest.raises(ValueError, match="k_enc"):
        CARAFE(8, k_enc=0)
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=8"):
        CARAFE(8, groups=3)
    with pytest.raises(ValueError, match="style must be one of"):
        DySample(8, style="ll")
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=8"):
        DySample(8, groups=3)
    with pytest.raises(ValueError, match="scale_factor\\*\\*2=9 must divide in_channels=8"):
        DySample(8, 3, style="pl", groups=2)
    with pytest.raises(TypeError, match="dyscope must be a bool"):
        DySample(8, dyscope=1)
    with pytest.raises(ValueError, match="bilinear has no option 'kernel_size'"):
        sapa.build_upsampler("bilinear", 8, kernel_size=3)


# ---- deconv and pixel shuffle ----------------------------------------------------------------

def naive_transposed_conv(x, weight, bias, stride, padding, out_size):
    """Scatter definition: input point (i, j) adds ``w[c, o, u, v] x[c, i, j]`` at
    ``(s i - p + u, s j - p + v)``; points that land outside the output are dropped."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    out = bias.view(1, -1, 1, 1).expand(b, -1, *out_size).clone()
    for i in range(h):
        for j in range(w):
            for u in range(k):
                for v in range(k):
                    oi, oj = stride * i - padding + u, stride * j - padding + v
                    if 0 <= oi < out_size[0] and 0 <= oj < out_size[1]:
                        out[:, :, oi, oj] += x[:, :, i, j] @ weight[:, :, u, v]
    return out


@pytest.mark.parametrize("scale,kernel_size", [(2, 3), (2, 5), (4, 3), (3, 1)])
def test_deconv_matches_definition(scale, kernel_size):
    torch.manual_seed(0)
    up = randomize_(Deconv(3, scale, kernel_size=kernel_size).double())
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    out = up(x)
    want = naive_transposed_conv(x, up.deconv.weight.detach(), up.deconv.bias.detach(), scale,
                                 (kernel_size - 1) // 2, (4 * scale, 5 * scale))
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("scale", [2, 3])
def test_pixelshuffle_matches_definition(scale):
    torch.manual_seed(0)
    up = randomize_(PixelShuffleUpsampler(3, scale).double())
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y = F.conv2d(x, up.conv.weight, up.conv.bias, padding=1)  # C * s^2 channels
    out = up(x)
    for c in range(3):
        for a in range(scale):
            for b in range(scale):
                torch.testing.assert_close(out[:, c, a::scale, b::scale],
                                           y[:, c * scale * scale + a * scale + b], rtol=0, atol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_deconv_default_kernel_reaches_every_output(scale):
    up = Deconv(1, scale)
    assert up.kernel_size == 2 * scale - 1
    with torch.no_grad():
        up.deconv.weight.fill_(1.0)
        up.deconv.bias.zero_()
    out = up(torch.ones(1, 1, 4, 5))
    assert out.shape == (1, 1, 4 * scale, 5 * scale) and bool((out > 0).all())


def test_learned_parameter_counts_and_init():
    c, k = 16, 3
    de = Deconv(c, 2, kernel_size=k)
    ps = PixelShuffleUpsampler(c, 4, kernel_size=k)
    assert sum(p.numel() for p in de.parameters()) == c * c * k * k + c
    assert sum(p.numel() for p in ps.parameters()) == c * 16 * c * k * k + 16 * c
    for conv in (de.deconv, ps.conv):  # Xavier-uniform, zero bias
        fan_in = conv.weight[0].numel() if conv is ps.conv else conv.weight.shape[0] * k * k
        fan_out = conv.weight.shape[0] * k * k if conv is ps.conv else conv.weight.shape[1] * k * k
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.8 * bound
        assert torch.count_nonzero(conv.bias) == 0


# ---- CARAFE ----------------------------------------------------------------------------------

def naive_carafe_masks(up, x):
    """Content encoder, mmcv's pixel shuffle of the masks and its softmax, written out."""
    w_c = up.channel_compressor.weight[:, :, 0, 0]
    comp = torch.einsum("mc,bchw->bmhw", w_c, x) + up.channel_compressor.bias.view(1, -1, 1, 1)
    enc = up.content_encoder
    raw = F.conv2d(comp, enc.weight, enc.bias, padding=enc.padding, dilation=enc.dilation)
    s, kk, g = up.scale_factor, up.k_up ** 2, up.groups
    b, _, h, w = x.shape
    masks = raw.new_zeros(b, g * kk, s * h, s * w)
    for mc in range(g * kk):  # mask channel g * K^2 + p of sub-pixel (a, b) is raw channel
        for a in range(s):    # mc * s^2 + a * s + b
            for bb in range(s):
                masks[:, mc, a::s, bb::s] = raw[:, mc * s * s + a * s + bb]
    return torch.softmax(masks.view(b, g, kk, s * h, s * w), dim=2).view(b, g * kk, s * h, s * w)


def naive_carafe_reassemble(x, masks, k, groups, s):
    """mmcv ``carafe_naive_forward``: window points outside the map are skipped (no
    renormalisation); mask channel ``(group * K + iy) * K + ix``."""
    b, c, h, w = x.shape
    r, cpg = (k - 1) // 2, c // groups
    out = x.new_zeros(b, c, s * h, s * w)
    for ph in range(s * h):
        for pw in range(s * w):
            dh, dw = ph // s, pw // s
            for iy in range(dh - r, dh + r + 1):
                for ix in range(dw - r, dw + r + 1):
                    if iy < 0 or iy > h - 1 or ix < 0 or ix > w - 1:
                        continue
                    for g in range(groups):
                        mc = (g * k + iy - dh + r) * k + ix - dw + r
                        chans = slice(g * cpg, (g + 1) * cpg)
                        out[:, chans, ph, pw] += x[:, chans, iy, ix] * masks[:, mc, ph, pw, None]
    return out


@pytest.mark.parametrize("scale,k_up,groups", [(2, 5, 1), (2, 3, 2), (3, 5, 1)])
def test_carafe_matches_mmcv_naive(scale, k_up, groups, backend, require_backend):
    """Every backend of ``sapa.local_assemble`` (the ``backend`` fixture of tests/conftest.py)."""
    torch.manual_seed(0)
    up = randomize_(CARAFE(4, scale, c_mid=6, k_up=k_up, groups=groups, backend=backend).double())
    x = torch.randn(2, 4, 4, 5, dtype=torch.float64)
    require_backend(backend, x)
    masks = naive_carafe_masks(up, x)
    want = naive_carafe_reassemble(x, masks, k_up, groups, scale)
    torch.testing.assert_close(up(x), want)
    # the visualisation kernels are the masks the forward used
    torch.testing.assert_close(up.kernels(x), masks)


def test_carafe_kernels():
    torch.manual_seed(0)
    up = CARAFE(16)
    x = torch.randn(2, 16, 6, 5)
    ker = up.kernels(x)
    assert ker.shape == (2, 25, 12, 10) and not ker.requires_grad
    torch.testing.assert_close(ker.sum(1), torch.ones(2, 12, 10))
    # mmcv's init (encoder weights N(0, 0.001), zero bias) starts near the uniform 1/K^2
    assert (ker - 1 / 25).abs().max() < 0.01
    with pytest.raises(ValueError, match="scale_factor=2"):
        up.kernels(x, torch.randn(2, 16, 13, 10))
    # with K = 1 every kernel is the single weight 1: CARAFE is nearest upsampling
    up1 = randomize_(CARAFE(4, 3, k_up=1))
    x = torch.randn(2, 4, 3, 4)
    torch.testing.assert_close(up1(x), F.interpolate(x, scale_factor=3, mode="nearest"))


def test_carafe_init():
    up = CARAFE(32)
    enc, comp = up.content_encoder, up.channel_compressor
    assert 0.0007 < enc.weight.std().item() < 0.0013
    assert torch.count_nonzero(enc.bias) == 0 and torch.count_nonzero(comp.bias) == 0
    bound = math.sqrt(6.0 / (32 + 64))
    assert bound * 0.8 < comp.weight.abs().max() <= bound


@pytest.mark.parametrize("channels", [64, 256])
def test_carafe_parameters_table1(channels):
    """Table 1: ``Cd + 36 K^2 d`` weights with d = 64, K = 5 (x2, k_enc = 3); biases on top."""
    up = CARAFE(channels)
    d, k = 64, 5
    weights = sum(p.numel() for p in up.parameters() if p.dim() > 1)
    biases = sum(p.numel() for p in up.parameters() if p.dim() == 1)
    assert weights == channels * d + 36 * k * k * d
    assert biases == d + 4 * k * k


def test_carafe_gradcheck():
    torch.manual_seed(0)
    up = randomize_(CARAFE(2, 2, c_mid=2, k_enc=1, k_up=3).double())
    assert gradcheck_module(up, torch.randn(1, 2, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize("backend", [None, "reference"])
def test_carafe_gradcheck_fast_mode(backend):
    """A larger configuration (x3, two groups, 3x3 encoder), in gradcheck's fast mode."""
    torch.manual_seed(0)
    up = randomize_(CARAFE(4, 3, c_mid=3, k_up=5, groups=2, backend=backend).double())
    assert gradcheck_module(up, torch.randn(2, 4, 3, 4, dtype=torch.float64), fast_mode=True)


# ---- DySample --------------------------------------------------------------------------------

def naive_dysample(up, x):
    """tiny-smart/dysample, one output point at a time. Output point ``(P, Q) = (s i + a, s j + b)``
    of group ``g`` samples ``x`` at ``(j + (b + .5)/s - .5 + dx, i + (a + .5)/s - .5 + dy)``
    (grid_sample, bilinear, align_corners=False, border padding: clamp, then interpolate)."""
    b, c, h, w = x.shape
    s, g = up.scale_factor, up.groups
    def conv(m, t):
        return torch.einsum("oc,bchw->bohw", m.weight[:, :, 0, 0], t) + (
            0 if m.bias is None else m.bias.view(1, -1, 1, 1))
    # learned offsets per output point: d[:, comp, group, P, Q], comp 0 = x, 1 = y
    d = x.new_zeros(b, 2, g, s * h, s * w)
    if up.style == "lp":
        raw = conv(up.offset, x)
        raw = raw * torch.sigmoid(conv(up.scope, x)) * 0.5 if up.dyscope else raw * 0.25
        for comp in range(2):
            for gg in range(g):
                for a in range(s):
                    for bb in range(s):
                        chan = comp * g * s * s + gg * s * s + a * s + bb
                        d[:, comp, gg, a::s, bb::s] = raw[:, chan]
    else:
        xs = x.new_zeros(b, c // (s * s), s * h, s * w)  # pixel shuffle, written out
        for cc in range(c // (s * s)):
            for a in range(s):
                for bb in range(s):
                    xs[:, cc, a::s, bb::s] = x[:, cc * s * s + a * s + bb]
        raw = conv(up.offset, xs)
        raw = raw * torch.sigmoid(conv(up.scope, xs)) * 0.5 if up.dyscope else raw * 0.25
        d = raw.view(b, 2, g, s * h, s * w)
    out = x.new_zeros(b, c, s * h, s * w)
    cpg = c // g
    for P in range(s * h):
        for Q in range(s * w):
            i, a = divmod(P, s)
            j, bb = divmod(Q, s)
            for n in range(b):
                for gg in range(g):
                    px = j + (bb + 0.5) / s - 0.5 + d[n, 0, gg, P, Q]
                    py = i + (a + 0.5) / s - 0.5 + d[n, 1, gg, P, Q]
                    px, py = px.clamp(0, w - 1), py.clamp(0, h - 1)
                    x0, y0 = int(px.floor()), int(py.floor())
                    fx, fy = px - x0, py - y0
                    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
                    v = x[n, gg * cpg:(gg + 1) * cpg]
                    out[n, gg * cpg:(gg + 1) * cpg, P, Q] = (
                        (1 - fy) * ((1 - fx) * v[:, y0, x0] + fx * v[:, y0, x1])
                        + fy * ((1 - fx) * v[:, y1, x0] + fx * v[:, y1, x1]))
    return out


@pytest.mark.parametrize("style,dyscope", DYSAMPLE_CONFIGS)
@pytest.mark.parametrize("scale,groups", [(2, 4), (3, 2)])
def test_dysample_matches_official(style, dyscope, scale, groups):
    torch.manual_seed(0)
    c = 2 * scale * scale if style == "pl" else 4
    up = DySample(c, scale, style=style, groups=groups, dyscope=dyscope).double()
    randomize_(up, std=1.0)  # offsets of a few pixels, many past the border
    x = torch.randn(2, c, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(up(x), naive_dysample(up, x))


def authors_init_pos(s, groups, dtype):
    """tiny-smart/dysample ``DySample._init_pos`` (their meshgrid / transpose / repeat), in
    ``dtype``: ``h = arange(-(s - 1) / 2, (s - 1) / 2 + 1) / s``."""
    h = torch.arange((-s + 1) / 2, (s - 1) / 2 + 1, dtype=dtype) / s
    grid = torch.stack(torch.meshgrid([h, h], indexing="ij")).transpose(1, 2)
    return grid.repeat(1, groups, 1).reshape(1, -1, 1, 1)


class AuthorsDySample(torch.nn.Module):
    """tiny-smart/dysample ``dysample.py`` (latest: ``scope`` without bias), transcribed: the
    same module tree and state-dict names, the same sequence of operations."""

    def __init__(self, c, s, style, groups, dyscope):
        super().__init__()
        self.scale, self.style, self.groups = s, style, groups
        cin, cout = (c // s**2, 2 * groups) if style == "pl" else (c, 2 * groups * s**2)
        self.offset = torch.nn.Conv2d(cin, cout, 1)
        if dyscope:
            self.scope = torch.nn.Conv2d(cin, cout, 1, bias=False)
        self.register_buffer("init_pos", authors_init_pos(s, groups, torch.get_default_dtype()))

    def sample(self, x, offset):
        b, _, h, w = offset.shape
        offset = offset.view(b, 2, -1, h, w)
        cw, ch = torch.arange(w) + 0.5, torch.arange(h) + 0.5
        coords = torch.stack(torch.meshgrid([cw, ch], indexing="ij")).transpose(1, 2)
        coords = coords.unsqueeze(1).unsqueeze(0).type(x.dtype)
        norm = torch.tensor([w, h], dtype=x.dtype).view(1, 2, 1, 1, 1)
        # the release pixel-shuffles this 5-D tensor directly; torch's CPU backward of that
        # refuses the permuted gradient ("Unsupported memory format"), so shuffle the 4-D
        # view: the same data movement
        coords = F.pixel_shuffle((2 * (coords + offset) / norm - 1).flatten(1, 2), self.scale)
        coords = coords.unflatten(1, (2, -1)).permute(0, 2, 3, 4, 1).contiguous().flatten(0, 1)
        out = F.grid_sample(x.reshape(b * self.groups, -1, h, w), coords, mode="bilinear",
                            align_corners=False, padding_mode="border")
        return out.view(b, -1, self.scale * h, self.scale * w)

    def forward(self, x):
        s = self.scale
        if self.style == "pl":
            x_ = F.pixel_shuffle(x, s)
            if hasattr(self, "scope"):
                off = F.pixel_unshuffle(self.offset(x_) * self.scope(x_).sigmoid(), s) * 0.5
            else:
                off = F.pixel_unshuffle(self.offset(x_), s) * 0.25
        elif hasattr(self, "scope"):
            off = self.offset(x) * self.scope(x).sigmoid() * 0.5
        else:
            off = self.offset(x) * 0.25
        return self.sample(x, off + self.init_pos)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [2, 3, 4, 5])
def test_dysample_init_pos_is_the_authors_bit_for_bit(scale, dtype):
    groups = 2
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # a model built in float64 evaluates the offsets in it
    try:
        up = DySample(4, scale, groups=groups)
    finally:
        torch.set_default_dtype(default)
    want = authors_init_pos(scale, groups, dtype)
    assert up.init_pos.dtype == dtype and torch.equal(up.init_pos, want)
    # built in float32, then cast, as the authors' module would be
    assert torch.equal(DySample(4, scale, groups=groups).double().init_pos,
                       authors_init_pos(scale, groups, torch.float32).double())


@pytest.mark.parametrize("style,dyscope", DYSAMPLE_CONFIGS)
def test_dysample_scale3_equals_the_authors_module_float64(style, dyscope):
    torch.manual_seed(0)
    s, groups = 3, 2
    c = 2 * s * s
    ours = randomize_(DySample(c, s, style=style, groups=groups, dyscope=dyscope), std=0.5)
    theirs = AuthorsDySample(c, s, style, groups, dyscope)
    # the weights copied across; each module keeps the offsets buffer it computed itself
    weights = {k: v for k, v in ours.state_dict().items() if k != "init_pos"}
    assert theirs.load_state_dict(weights, strict=False).missing_keys == ["init_pos"]
    ours, theirs = ours.double(), theirs.double()
    x = torch.randn(2, c, 3, 4, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_theirs = ours(xa), theirs(xb)
    assert torch.equal(out_ours, out_theirs)
    grad = torch.randn_like(out_ours)
    out_ours.backward(grad)
    out_theirs.backward(grad)
    assert torch.equal(xa.grad, xb.grad)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert torch.equal(p.grad, theirs_params[name].grad), name


@pytest.mark.parametrize("style,dyscope", DYSAMPLE_CONFIGS)
def test_dysample_zero_offsets_is_bilinear(style, dyscope):
    up = DySample(16, 2, style=style, dyscope=dyscope).double()
    with torch.no_grad():
        up.offset.weight.zero_()
        up.offset.bias.zero_()
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(up(x), F.interpolate(x, scale_factor=2, mode="bilinear",
                                                    align_corners=False))
    assert torch.count_nonzero(up.offsets(x)) == 0


def test_dysample_init_and_parameters():
    c, g, s = 32, 4, 2
    lp = DySample(c, s)
    assert 0.0007 < lp.offset.weight.std().item() < 0.0013
    assert torch.count_nonzero(lp.offset.bias) == 0
    assert sum(p.numel() for p in lp.parameters()) == c * 2 * g * s * s + 2 * g * s * s
    lp_dy = DySample(c, s, dyscope=True)
    assert torch.count_nonzero(lp_dy.scope.weight) == 0 and lp_dy.scope.bias is None
    assert sum(p.numel() for p in lp_dy.parameters()) == 2 * c * 2 * g * s * s + 2 * g * s * s
    pl = DySample(c, s, style="pl")
    assert sum(p.numel() for p in pl.parameters()) == c // (s * s) * 2 * g + 2 * g
    # state-dict names of the authors' code, so their checkpoints load
    assert set(lp_dy.state_dict()) == {"offset.weight", "offset.bias", "scope.weight", "init_pos"}
    assert lp.init_pos.flatten()[:4].tolist() == [-0.25, 0.25, -0.25, 0.25]  # x of (a, b)
    assert lp.init_pos.flatten()[16:20].tolist() == [-0.25, -0.25, 0.25, 0.25]  # y of (a, b)


def test_dysample_offsets():
    torch.manual_seed(0)
    up = randomize_(DySample(8, 2, groups=2), std=1.0)
    x = torch.randn(2, 8, 3, 4)
    off = up.offsets(x)
    assert off.shape == (2, 2, 2, 6, 8) and not off.requires_grad
    raw = F.conv2d(x, up.offset.weight, up.offset.bias) * 0.25  # B x 2*G*s^2 x H x W
    # x-offset of group 1, sub-pixel (1, 0), at input point (2, 3)
    torch.testing.assert_close(off[:, 1, 0, 2 * 2 + 1, 2 * 3],
                               raw[:, 0 * 8 + 1 * 4 + 1 * 2 + 0, 2, 3])
    # y-offset of group 0, sub-pixel (0, 1), at input point (1, 2)
    torch.testing.assert_close(off[:, 0, 1, 2 * 1, 2 * 2 + 1],
                               raw[:, 1 * 8 + 0 * 4 + 0 * 2 + 1, 1, 2])


@pytest.mark.parametrize("style,dyscope", DYSAMPLE_CONFIGS)
def test_dysample_gradcheck(style, dyscope):
    torch.manual_seed(0)
    up = randomize_(DySample(4, 2, style=style, groups=2, dyscope=dyscope).double(), std=0.3)
    assert gradcheck_module(up, torch.randn(1, 4, 2, 2, dtype=torch.float64))
    assert gradcheck_module(up, torch.randn(2, 4, 3, 4, dtype=torch.float64), fast_mode=True)


# ---- every learned one: gradients reach every parameter ---------------------------------------

@pytest.mark.parametrize("name,kwargs", [
    ("deconv", {}), ("pixelshuffle", {}), ("carafe", {}), ("carafe", {"groups": 2}),
    *[("dysample", {"style": st, "dyscope": dy}) for st, dy in DYSAMPLE_CONFIGS],
])
def test_gradients_reach_every_parameter(name, kwargs):
    torch.manual_seed(0)
    up = sapa.build_upsampler(name, 16, **kwargs)
    x = torch.randn(2, 16, 5, 6, requires_grad=True)
    (up(x) * torch.randn(2, 16, 10, 12)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in up.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"
