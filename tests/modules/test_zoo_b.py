"""Encoder-guided baselines: indexnet-hin, indexnet-m2o, a2u, fade.

Each module is compared, with the same weights and inputs, against a step-by-step transcription
of the published forward (poppinace/indexnet_matting ``hlindex.py`` + ``hldecoder.py``;
dongdong93/a2u_matting ``BilinearModel.py`` + the ``biupsample`` CUDA kernel; poppinace/fade
``FADE_H2L.py`` + mmcv's ``carafe``), forward and backward; gradients are checked with
``torch.autograd.gradcheck`` in float64.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import sapa
from sapa.modules.a2u import A2U
from sapa.modules.fade import FADE
from sapa.modules.indexnet import IndexNetUpsample

NAMES = ("indexnet-hin", "indexnet-m2o", "a2u", "fade")
X2_ONLY = ("indexnet-hin", "indexnet-m2o", "a2u")


def _pair(b=2, c=8, h=4, w=5, size=None, cg=None, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    size = size or (2 * h, 2 * w)
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    guide = torch.randn(b, cg or c, *size, generator=gen, dtype=dtype)
    return x, guide


def _randomise(module, seed=1):
    """Random weights everywhere (and BN running statistics), so no term can hide behind a
    zero bias or a unit scale."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.3 * torch.randn(buf.shape, generator=gen, dtype=buf.dtype))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen, dtype=buf.dtype))
    return module


# ---- transcriptions of the published code -----------------------------------------------------

def _depth_to_space(y, r=2):
    """``F.pixel_shuffle`` by its definition: channel ``c * r^2 + a * r + b`` goes to channel
    ``c`` at ``(r i + a, r j + b)``."""
    b, cr, h, w = y.shape
    c = cr // (r * r)
    out = y.new_zeros(b, c, r * h, r * w)
    for ch in range(c):
        for a in range(r):
            for bb in range(r):
                out[:, ch, a::r, bb::r] = y[:, ch * r * r + a * r + bb]
    return out


def _reassemble_loop(x, masks, k, out_size):
    """The ``biupsample_naive`` / mmcv ``carafe`` forward kernel, one output point at a time:
    window centred on the projective location, points outside the map skipped, mask channel
    ``(iy - down_h + r) * K + (ix - down_w + r)``."""
    b, c, h, w = x.shape
    r = (k - 1) // 2
    out = x.new_zeros(b, c, *out_size)
    for ph in range(out_size[0]):
        dh = ph * h // out_size[0]
        for pw in range(out_size[1]):
            dw = pw * w // out_size[1]
            acc = x.new_zeros(b, c)
            for iy in range(dh - r, dh + r + 1):
                for ix in range(dw - r, dw + r + 1):
                    if iy < 0 or iy > h - 1 or ix < 0 or ix > w - 1:
                        continue
                    mask_c = (iy - dh + r) * k + (ix - dw + r)
                    acc = acc + x[:, :, iy, ix] * masks[:, mask_c, ph, pw, None]
            out[:, :, ph, pw] = acc
    return out


def _bn_eval(z, bn):
    shape = (1, -1, 1, 1)
    return ((z - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _indexnet_reference(m: IndexNetUpsample, x, guide):
    """``HolisticIndexBlock`` / ``DepthwiseM2OIndexBlock`` forward (decoder index, BN in eval
    mode) and ``IndexedUpsamlping``: ``idx_de * F.interpolate(x, mode='nearest')``."""
    c = m.guide_channels
    k, pad = (4, 1) if m.context else (2, 0)
    seq = m.index if m.nonlinear else [m.index]
    first = seq[0]

    def branch(w1, bn_slice, w2):
        z = F.conv2d(guide, w1, stride=2, padding=pad)
        if not m.nonlinear:
            return z
        bn = seq[1]
        z = ((z - bn.running_mean[bn_slice].view(1, -1, 1, 1))
             / torch.sqrt(bn.running_var[bn_slice].view(1, -1, 1, 1) + bn.eps)
             * bn.weight[bn_slice].view(1, -1, 1, 1) + bn.bias[bn_slice].view(1, -1, 1, 1))
        z = torch.clamp(z, 0.0, 6.0)  # ReLU6
        return F.conv2d(z, w2)

    if m.block == "holistic":
        w2 = seq[3].weight if m.nonlinear else None
        logits = branch(first.weight, slice(None), w2)
        assert logits.shape[1] == 4
    else:  # four branches, one per position of the 2 x 2 cell, stacked on a new dim 2
        outs = []
        for j in range(4):
            sl = slice(j * c, (j + 1) * c)
            w2 = seq[3].weight[sl] if m.nonlinear else None
            outs.append(branch(first.weight[sl], sl, w2).unsqueeze(2))
        z = torch.cat(outs, dim=2)  # B x C x 4 x h x w
        bs, _, _, h, w = z.shape
        logits = z.view(bs, c * 4, h, w)
    idx_de = _depth_to_space(torch.sigmoid(logits), 2)
    return idx_de * F.interpolate(x, size=guide.shape[2:], mode="nearest")


def _a2u_reference(m: A2U, x, guide):
    """``InterChannelUpDown.forward`` with share=True, d=1, group=1 (one sample at a time, as
    the code), then ``biupsample_naive``."""
    n, c, h, w = guide.shape
    k, kk = m.encode_kernel_size, m.kernel_size
    padding = int((k - 1) / 2) if k % 2 == 0 else k // 2
    p_u = m.proj_p(F.adaptive_avg_pool2d(guide, (1, 1))).view(n, 4 * kk * kk, 1, 1, 1)
    u = m.proj_u(F.adaptive_avg_pool2d(guide, (k, k))).view(n, -1, k, k)
    v = m.proj_v(F.adaptive_avg_pool2d(guide, (k, k))).view(n, -1, k, k)
    out_u = []
    for i in range(n):
        out1 = F.conv2d(guide[i].unsqueeze(1), u[i][0].view(1, 1, k, k), stride=2,
                        padding=padding).view(1, c, h // 2, w // 2)
        out2 = F.conv2d(guide[i].unsqueeze(1), v[i][0].view(1, 1, k, k), stride=2,
                        padding=padding).view(1, c, h // 2, w // 2)
        out1 = F.leaky_relu(F.group_norm(out1, m.norm_u.num_groups, m.norm_u.weight,
                                         m.norm_u.bias, m.norm_u.eps))
        out2 = F.leaky_relu(F.group_norm(out2, m.norm_v.num_groups, m.norm_v.weight,
                                         m.norm_v.bias, m.norm_v.eps))
        out1 = out1.view(c, 1, h // 2, w // 2)
        out2 = out2.view(c, 1, h // 2, w // 2)
        out_u.append(F.conv2d((out1 * out2).sum(dim=0, keepdim=True) / math.sqrt(c),
                              p_u[i].view(4 * kk * kk, 1, 1, 1)))
    out_u = torch.cat(out_u, 0).view(n, kk * kk * 4, h // 2, w // 2)
    out_u = _depth_to_space(out_u, 2)
    masks = torch.softmax(torch.sigmoid(out_u), dim=1) if kk > 1 else torch.sigmoid(out_u)
    return _reassemble_loop(x, masks, kk, (h, w))


def _fade_reference_h2l(m: FADE, x, guide):
    """``FADE_H2L.FADE.forward``: semi-shift kernels from four shifted stride-2 convolutions of
    the compressed encoder feature plus the decoder's, space-reassembled; CARAFE; gate."""
    en, de = guide, x
    b, _, h, w = de.shape
    e, kk = m.embed_dim, m.kernel_size
    weight, bias = m.content_encoder.weight, m.content_encoder.bias
    compressed_en = m.compress_guide(en)
    compressed_de = m.compress_x(de)
    pads = ([1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 0, 1])
    pad_en = torch.cat([F.pad(compressed_en, p) for p in pads], dim=1)
    pad_en = pad_en.view(b * 4, e, 2 * h + 1, 2 * w + 1)
    kernels = (F.conv2d(pad_en, weight, bias, stride=2).view(b, 4, kk * kk, h, w)
               + F.conv2d(compressed_de, weight, bias, stride=1, padding=1).unsqueeze(1))
    # space_reassemble: sub-position s = 2 r1 + r2 goes to (2 i + r1, 2 j + r2)
    full = kernels.new_zeros(b, kk * kk, 2 * h, 2 * w)
    for s in range(4):
        full[:, :, s // 2::2, s % 2::2] = kernels[:, s]
    kernels = torch.softmax(full, dim=1)
    gate = torch.sigmoid(F.interpolate(m.gate(de), scale_factor=2))
    return gate * en + (1 - gate) * _reassemble_loop(de, kernels, kk, (2 * h, 2 * w))


def _fade_reference_any_size(m: FADE, x, guide):
    """FADE at any guide size: the ``3 x 3`` content encoder at both resolutions, the decoder's
    response and the gate carried to each output point's projective location
    ``floor(i' * H / H')`` (the generalisation of ``F.interpolate(scale_factor=2)``)."""
    h, w = x.shape[2:]
    hh, ww = guide.shape[2:]
    rows = [i * h // hh for i in range(hh)]
    cols = [j * w // ww for j in range(ww)]

    def nn_up(t):
        return t[:, :, rows][:, :, :, cols]

    logits = (m.content_encoder(m.compress_guide(guide))
              + nn_up(m.content_encoder(m.compress_x(x))))
    kernels = torch.softmax(logits, dim=1)
    gate = nn_up(torch.sigmoid(m.gate(x)))
    return gate * guide + (1 - gate) * _reassemble_loop(x, kernels, m.kernel_size, (hh, ww))


def _build(name, c=8, cg=None, **kw):
    return sapa.build_upsampler(name, c, cg, **kw).double()


def _compare_fwd_bwd(module, reference, x, guide, atol=1e-10):
    """Same output and same gradients (inputs and every parameter) as the reference."""
    x = x.clone().requires_grad_(True)
    guide = guide.clone().requires_grad_(True)
    params = [p for p in module.parameters()]
    out = module(x, guide)
    ref = reference(module, x, guide)
    torch.testing.assert_close(out, ref, atol=atol, rtol=1e-9)
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    g_out = torch.autograd.grad((out * proj).sum(), [x, guide, *params], allow_unused=True)
    g_ref = torch.autograd.grad((ref * proj).sum(), [x, guide, *params], allow_unused=True)
    for a, b in zip(g_out, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-8)


# ---- agreement with the published code ----------------------------------------------------------

@pytest.mark.parametrize("block", ["holistic", "m2o"])
@pytest.mark.parametrize("nonlinear,context", [(True, True), (False, False), (True, False)])
def test_indexnet_matches_published_code(block, nonlinear, context):
    m = IndexNetUpsample(6, block=block, nonlinear=nonlinear, context=context).double().eval()
    _randomise(m)
    x, guide = _pair(c=6, h=3, w=4)
    _compare_fwd_bwd(m, _indexnet_reference, x, guide)


def test_indexnet_hin_with_other_guide_channels_matches_published_code():
    m = IndexNetUpsample(3, 5, block="holistic").double().eval()
    _randomise(m)
    x, guide = _pair(c=3, cg=5, h=3, w=4)
    _compare_fwd_bwd(m, _indexnet_reference, x, guide)


@pytest.mark.parametrize("kernel_size,encode_kernel_size,cg,groups",
                         [(3, 6, 8, 2), (5, 5, 4, None), (1, 3, 4, 1)])
def test_a2u_matches_published_code(kernel_size, encode_kernel_size, cg, groups):
    m = A2U(3, cg, kernel_size=kernel_size, encode_kernel_size=encode_kernel_size,
            num_groups=groups).double()
    _randomise(m)
    x, guide = _pair(c=3, cg=cg, h=4, w=5)
    _compare_fwd_bwd(m, _a2u_reference, x, guide)


@pytest.mark.parametrize("backend", ["reference", "lean"])
def test_fade_matches_published_code(backend):
    m = FADE(4, embed_dim=6, backend=backend).double()
    _randomise(m)
    x, guide = _pair(c=4, h=4, w=5)
    _compare_fwd_bwd(m, _fade_reference_h2l, x, guide)


@pytest.mark.parametrize("size", [(16, 20), (9, 11), (5, 7)])
def test_fade_any_guide_size_matches_loop_reference(size):
    m = FADE(3, embed_dim=5).double()
    _randomise(m)
    x, guide = _pair(c=3, h=4, w=5, size=size)
    _compare_fwd_bwd(m, _fade_reference_any_size, x, guide)


def test_fade_default_hyperparameters_match_published_code():
    # the code's defaults: embedding 64, up kernel 5, 3x3 content encoder
    m = sapa.build_upsampler("fade", 5).double()
    assert (m.embed_dim, m.kernel_size, m.encoder_kernel_size) == (64, 5, 3)
    assert m.content_encoder.weight.shape == (25, 64, 3, 3)
    _randomise(m)
    x, guide = _pair(c=5, h=3, w=4)
    with torch.no_grad():
        torch.testing.assert_close(m(x, guide), _fade_reference_h2l(m, x, guide))


# ---- gradcheck -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    m = _randomise(_build(name, 4)).eval()
    if hasattr(m, "backend"):
        m.backend = "lean"  # the custom op's own backward, not autograd through the reference
    x, guide = _pair(b=1, c=4, h=3, w=4)
    x.requires_grad_(True)
    guide.requires_grad_(True)
    # fast mode checks random projections of the Jacobian: the same test, far fewer forwards
    assert torch.autograd.gradcheck(lambda a, g: m(a, g), (x, guide), fast_mode=True)



@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_full_jacobian(name):
    m = _randomise(_build(name, 4)).eval()
    if hasattr(m, "backend"):
        m.backend = "lean"
    x, guide = _pair(b=2, c=4, h=3, w=4)
    x.requires_grad_(True)
    guide.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, g: m(a, g), (x, guide))


def test_initialisation_follows_the_released_code():
    torch.manual_seed(0)
    c = 64
    hin = IndexNetUpsample(c, block="holistic")
    m2o = IndexNetUpsample(c, block="m2o")
    # N(0, 2 / (k * k * out_channels)), out_channels of the code's own (per-branch) conv
    for conv, out in ((hin.index[0], 2 * c), (hin.index[3], 4), (m2o.index[0], c), (m2o.index[3], c)):
        want = math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * out))
        assert abs(conv.weight.std().item() / want - 1) < 0.2, conv
    a2u = A2U(c)
    gain = torch.nn.init.calculate_gain("leaky_relu", 0.01)
    want = gain * math.sqrt(2.0 / (c + 36))  # Xavier-normal of the 1x1 conv C -> 4K^2
    assert abs(a2u.proj_p.weight.std().item() / want - 1) < 0.1
    fade = FADE(c)
    for conv in (fade.gate, fade.compress_guide, fade.compress_x, fade.content_encoder):
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.abs().max() <= math.sqrt(6.0 / (fan_in + fan_out))  # Xavier-uniform
    for m in (a2u, fade):
        for name, p in m.named_parameters():
            if name.endswith("bias") and "norm" not in name:
                assert (p == 0).all(), name

# ---- shapes, sizes and the factory ---------------------------------------------------------------

def test_registered_as_guided():
    names = sapa.list_upsamplers()
    for name in NAMES:
        assert name in names
        assert sapa.modules.is_guided(name)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cg", [None, 16])
def test_x2_shape(name, cg):
    if cg is not None and name in ("indexnet-m2o", "fade"):
        with pytest.raises(ValueError, match="guide_channels"):
            sapa.build_upsampler(name, 8, cg)
        return
    m = sapa.build_upsampler(name, 8, cg)
    x, guide = _pair(c=8, cg=cg, h=5, w=3, dtype=torch.float32)
    out = m(x, guide)
    assert out.shape == (2, 8, 10, 6) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(16, 12), (9, 7), (11, 6)])
def test_fade_x4_and_odd_guide_shapes(size):
    m = sapa.build_upsampler("fade", 8, scale_factor=4)
    x, guide = _pair(c=8, h=4, w=3, size=size, dtype=torch.float32)
    assert m(x, guide).shape == (2, 8, *size)
    assert m.kernels(x, guide).shape == (2, 25, *size)


@pytest.mark.parametrize("name", X2_ONLY)
@pytest.mark.parametrize("size", [(16, 12), (9, 7), (8, 7), (4, 3)])
def test_x2_only_modules_reject_other_guide_sizes(name, size):
    m = sapa.build_upsampler(name, 8)
    x, guide = _pair(c=8, h=4, w=3, size=size, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"exactly x2: guide must be 2H x 2W = 8x6"):
        m(x, guide)


@pytest.mark.parametrize("name", X2_ONLY)
@pytest.mark.parametrize("scale", [4, 1, 3])
def test_x2_only_modules_reject_other_scale_factors(name, scale):
    with pytest.raises(ValueError, match="scale_factor"):
        sapa.build_upsampler(name, 8, scale_factor=scale)


# ---- parameter counts (SAPA Table 1 counts weights; BN / GN / biases come on top) ---------------

def _count(module, kind):
    total = 0
    for mod in module.modules():
        for pname, p in mod.named_parameters(recurse=False):
            is_conv_weight = isinstance(mod, torch.nn.Conv2d) and pname == "weight"
            total += p.numel() if (kind == "weights") == is_conv_weight else 0
    return total


@pytest.mark.parametrize("c", [32, 64])
def test_param_counts_against_table1(c):
    hin = sapa.build_upsampler("indexnet-hin", c)
    assert _count(hin, "weights") == 32 * c * c + 8 * c
    assert _count(hin, "rest") == 4 * c  # BatchNorm2d(2C)

    m2o = sapa.build_upsampler("indexnet-m2o", c)
    assert _count(m2o, "weights") == 68 * c * c  # 4 x (16C^2 + C^2)
    assert _count(m2o, "rest") == 8 * c  # four BatchNorm2d(C)

    k = 3
    a2u = sapa.build_upsampler("a2u", c)
    assert _count(a2u, "weights") == 4 * k * k * c + 2 * c
    assert _count(a2u, "rest") == 4 * k * k + 2 + 4 * c  # biases and the two GroupNorms

    fade = sapa.build_upsampler("fade", c)
    e, kk, ke = 64, 5, 3
    assert sum(p.numel() for p in fade.parameters()) == e * (2 * c + 1) + (e * ke * ke + 1) * kk * kk + c + 1


def test_indexnet_linear_variants_param_counts():
    c = 16
    # no context, linear: a 2x2 stride-2 conv, as in the FADE repo's segmentation runs
    m2o = sapa.build_upsampler("indexnet-m2o", c, nonlinear=False, context=False)
    assert _count(m2o, "weights") == 16 * c * c
    hin = sapa.build_upsampler("indexnet-hin", c, nonlinear=False, context=False)
    assert _count(hin, "weights") == 16 * c
    assert _count(sapa.build_upsampler("indexnet-hin", c, nonlinear=False), "weights") == 64 * c


# ---- gradients, kernels --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    m = sapa.build_upsampler(name, 8).train()
    _randomise(m)
    x, guide = _pair(c=8, h=4, w=5, dtype=torch.float32)
    proj = torch.randn(2, 8, 8, 10, generator=torch.Generator().manual_seed(5))
    (m(x, guide) * proj).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["a2u", "fade"])
def test_kernels_are_the_ones_assembled(name):
    m = _randomise(_build(name, 4))
    x, guide = _pair(c=4, h=4, w=5)
    kern = m.kernels(x, guide)
    kk = m.kernel_size ** 2
    assert kern.shape == (2, kk, 8, 10) and not kern.requires_grad
    torch.testing.assert_close(kern.sum(1), torch.ones(2, 8, 10, dtype=kern.dtype))
    up = sapa.local_assemble(kern, x, m.kernel_size, backend="reference")
    with torch.no_grad():
        out = m(x, guide)
    if name == "fade":  # out = g * guide + (1 - g) * up: solve for g, it must be the gate
        g = torch.sigmoid(m.gate(x)).repeat_interleave(2, 2).repeat_interleave(2, 3)
        up = g * guide + (1 - g) * up
    torch.testing.assert_close(out, up)


@pytest.mark.parametrize("block", ["holistic", "m2o"])
def test_indexnet_kernels_are_the_index_map(block):
    m = _randomise(IndexNetUpsample(4, block=block).double()).eval()
    x, guide = _pair(c=4, h=3, w=4)
    kern = m.kernels(x, guide)
    assert kern.shape == (2, 1, 6, 8) and not kern.requires_grad
    assert ((kern > 0) & (kern < 1)).all()
    with torch.no_grad():
        idx = m.index_map(guide)
        out = m(x, guide)
    assert idx.shape == ((2, 1, 6, 8) if block == "holistic" else (2, 4, 6, 8))
    torch.testing.assert_close(kern, idx.mean(1, keepdim=True))
    torch.testing.assert_close(out, idx * x.repeat_interleave(2, 2).repeat_interleave(2, 3))


@pytest.mark.parametrize("name", ["a2u", "fade"])
def test_backends_agree(name):
    x, guide = _pair(c=4, h=4, w=5)
    outs = []
    for backend in ("reference", "lean"):
        m = _randomise(_build(name, 4, backend=backend))
        xi, gi = x.clone().requires_grad_(True), guide.clone().requires_grad_(True)
        out = m(xi, gi)
        out.square().sum().backward()
        outs.append((out.detach(), xi.grad, gi.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_missing_guide_raises(name):
    m = sapa.build_upsampler(name, 8)
    x = torch.randn(1, 8, 4, 4)
    with pytest.raises(ValueError, match="guide"):
        m(x)
    with pytest.raises(ValueError, match="guide"):
        m.kernels(x, None)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_before_work(name):
    m = sapa.build_upsampler(name, 8)
    x, guide = _pair(c=8, h=4, w=4, dtype=torch.float32)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        m(x.numpy(), guide)
    with pytest.raises(ValueError, match="x must be 4-D"):
        m(x[0], guide)
    with pytest.raises(TypeError, match="guide must be a floating-point"):
        m(x, guide.long())
    with pytest.raises(TypeError, match="dtype"):
        m(x, guide.double())
    with pytest.raises(ValueError, match="in_channels=8"):
        m(x[:, :4], guide)
    with pytest.raises(ValueError, match="guide_channels=8"):
        m(x, guide[:, :4])
    with pytest.raises(ValueError, match="batch size"):
        m(x, guide[:1])
    with pytest.raises(ValueError, match="guide"):
        m(x, guide[:, :, :3, :3])  # smaller than x


@pytest.mark.parametrize("name,kwargs,match", [
    ("indexnet-hin", {"block": "m2o"}, "indexnet-hin has no option .block."),
    ("indexnet-m2o", {"guide_channels": 4}, "guide_channels == in_channels"),
    ("fade", {"guide_channels": 4}, "guide_channels == in_channels"),
    ("fade", {"kernel_size": 4}, "kernel_size"),
    ("fade", {"encoder_kernel_size": 2}, "encoder_kernel_size"),
    ("fade", {"embed_dim": 0}, "embed_dim"),
    ("a2u", {"kernel_size": 2}, "kernel_size"),
    ("a2u", {"encode_kernel_size": 0}, "encode_kernel_size"),
    ("a2u", {"num_groups": 3}, "num_groups"),
    ("a2u", {"in_channels": 0}, "in_channels"),
])
def test_bad_construction_raises(name, kwargs, match):
    kwargs = dict(kwargs)
    c = kwargs.pop("in_channels", 8)
    cg = kwargs.pop("guide_channels", None)
    with pytest.raises((ValueError, TypeError), match=match):
        sapa.build_upsampler(name, c, cg, **kwargs)


def test_bad_block_and_unknown_name_raise():
    with pytest.raises(ValueError, match="block must be one of"):
        IndexNetUpsample(8, block="o2o")
    with pytest.raises(ValueError, match="unknown upsampler"):
        sapa.build_upsampler("indexnet", 8)
