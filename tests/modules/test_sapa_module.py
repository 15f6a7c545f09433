"""The SAPA module (variants I / B / P / G): shapes, Table-1 parameter counts, the formulas of
paper §4.2 (as the ``SAPA`` docstring writes them), gradients to every parameter, state_dict round trip, bad input."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sapa import SAPA, build_upsampler, sapa_attention
from sapa.modules import is_guided

VARIANTS = ("I", "B", "P", "G")
# name -> (H, W), (H', W')
SIZES = {"x2": ((4, 5), (8, 10)), "x4": ((3, 4), (12, 16)), "2H+1": ((4, 5), (9, 11))}


def features(c=8, cg=8, size="x2", batch=2, seed=0, dtype=torch.float32):
    (h, w), (ho, wo) = SIZES[size]
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, c, h, w, generator=gen, dtype=dtype),
            torch.randn(batch, cg, ho, wo, generator=gen, dtype=dtype))


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in every parameter (initial LayerNorm affines are 1 and 0, and the
    projections tiny: a formula that ignored one of them could still pass)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if p.dim() == 1 else 0.0))
    return module


# ---- shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape(variant, size):
    x, guide = features(size=size)
    out = SAPA(8, variant=variant)(x, guide)
    assert out.shape == (2, 8) + guide.shape[2:] and out.dtype == x.dtype


@pytest.mark.parametrize("variant", ["B", "P", "G"])
def test_output_shape_other_channels(variant):
    x, guide = features(c=8, cg=6, size="2H+1")
    assert SAPA(8, 6, variant=variant)(x, guide).shape == (2, 8, 9, 11)
    assert SAPA(8, 6, variant=variant, out_channels=5)(x, guide).shape == (2, 5, 9, 11)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kernels_are_normalized(variant):
    # float64: the random parameters give scores in the hundreds, where float32 exp(s - lse)
    # is only good to ~|s| * 6e-8
    x, guide = features(size="2H+1", dtype=torch.float64)
    m = randomize_(SAPA(8, variant=variant, kernel_size=3)).double()
    kernels = m.kernels(x, guide)
    assert kernels.shape == (2, 9, 9, 11)
    assert (kernels >= 0).all()
    torch.testing.assert_close(kernels.sum(1), torch.ones(2, 9, 11, dtype=torch.float64),
                               rtol=0, atol=1e-12)


# ---- parameter counts against Table 1 (C = Cg, d = 32, K = 5) -------------------------------

def count(module: nn.Module):
    """``(weights, biases, norms)``: projection weights, projection biases, norm affines."""
    weights = biases = norms = 0
    for name, p in module.named_parameters():
        if name.startswith("norm_"):
            norms += p.numel()
        elif name.endswith(".weight"):
            weights += p.numel()
        elif name.endswith(".bias"):
            biases += p.numel()
        else:
            raise AssertionError(f"unexpected parameter {name}")
    return weights, biases, norms


C, D = 64, 32
TABLE1 = {
    # variant, decoder_query -> (weights, biases): Table 1 counts the weights
    ("I", "table1"): (0, 0),
    ("B", "table1"): (2 * C * D, 2 * D),
    ("P", "table1"): (2 * C * D, 2 * D),  # the query's decoder branch reuses Pk
    ("G", "table1"): (2 * C * D + C, 2 * D + 1),  # + the gate's C -> 1 projection
    ("P", "official"): (3 * C * D, 3 * D),  # a separate Pqx
    ("G", "official"): (3 * C * D + C, 3 * D + 1),
}


@pytest.mark.parametrize("variant, decoder_query", list(TABLE1))
def test_parameter_counts_table1(variant, decoder_query):
    m = SAPA(C, C, variant=variant, embed_dim=D, kernel_size=5, decoder_query=decoder_query)
    weights, biases = TABLE1[variant, decoder_query]
    assert count(m) == (weights, biases, 2 * C + 2 * C)  # LayerNorm affines of x and the guide
    assert count(SAPA(C, C, variant=variant, embed_dim=D, decoder_query=decoder_query, bias=False,
                      norm="none")) == (weights, 0, 0)


def test_parameter_counts_general():
    cx, cg, d, cout = 16, 24, 8, 5
    norms = 2 * cx + 2 * cg
    assert count(SAPA(cx, cg, variant="B", embed_dim=d)) == (cg * d + cx * d, 2 * d, norms)
    assert count(SAPA(cx, cg, variant="G", embed_dim=d)) == (cg * d + cx * d + cx, 2 * d + 1, norms)
    # a value projection when out_channels != C
    assert count(SAPA(cx, cg, variant="B", embed_dim=d, out_channels=cout)) == (
        cg * d + cx * d + cx * cout, 2 * d + cout, norms)
    assert count(SAPA(cx, cx, variant="I", norm="group")) == (0, 0, 4 * cx)


# ---- the formulas ---------------------------------------------------------------------------

def _ln(t, norm):
    z = F.layer_norm(t.permute(0, 2, 3, 1), t.shape[1:2], norm.weight, norm.bias, norm.eps)
    return z.permute(0, 3, 1, 2)


def _nn(t, size):
    rows = torch.arange(size[0]) * t.shape[2] // size[0]
    cols = torch.arange(size[1]) * t.shape[3] // size[1]
    return t[:, :, rows][:, :, :, cols]


def _conv(t, conv):
    out = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], t)
    return out + conv.bias[None, :, None, None]


def expected_output(m: SAPA, x, guide):
    """Paper §4.2 written out: LN, 1x1 projections, NN upsampling, the reference operator."""
    xn, yn = _ln(x, m.norm_x), _ln(guide, m.norm_guide)
    size = guide.shape[2:]
    if m.variant == "I":
        q, k = yn, xn
    else:
        k = _conv(xn, m.k)
        q = _conv(yn, m.q)
        if m.variant in ("P", "G"):
            # Table 1: Pqx = Pk on LN(x); the official release: its own Pqx on the raw x
            q_x = _nn(_conv(x, m.q_x) if m.decoder_query == "official" else k, size)
        if m.variant == "P":
            q = q + q_x
        elif m.variant == "G":
            g = _nn(torch.sigmoid(_conv(xn, m.gate)), size)
            q = g * q + (1 - g) * q_x
    v = _conv(xn, m.v) if hasattr(m, "v") else x
    return sapa_attention(q, k, v, m.kernel_size, normalizer=m.normalizer, border=m.border,
                          backend="reference")


FORMULA_CASES = [("I", "table1", None)] + [
    (variant, dq, out)
    for variant in ("B", "P", "G") for dq in ("table1", "official") for out in (None, 3)]


@pytest.mark.parametrize("variant, decoder_query, out_channels", FORMULA_CASES)
def test_forward_follows_the_paper(variant, decoder_query, out_channels):
    x, guide = features(size="2H+1", dtype=torch.float64)
    m = randomize_(SAPA(8, variant=variant, kernel_size=3, embed_dim=4, decoder_query=decoder_query,
                        out_channels=out_channels)).double()
    torch.testing.assert_close(m(x, guide), expected_output(m, x, guide), rtol=1e-10, atol=1e-10)


# ---- gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", [None, "reference"], ids=["auto", "reference"])
@pytest.mark.parametrize("decoder_query", ["table1", "official"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant, decoder_query, backend):
    x, guide = features(size="2H+1")
    x.requires_grad_()
    guide.requires_grad_()
    m = SAPA(8, variant=variant, kernel_size=3, embed_dim=4, decoder_query=decoder_query,
             out_channels=6, backend=backend)
    target = torch.randn(2, 6, 9, 11, generator=torch.Generator().manual_seed(1))
    (m(x, guide) * target).sum().backward()
    for name, p in [*m.named_parameters(), ("x", x), ("guide", guide)]:
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient in {name}"


# ---- state_dict -----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trip(variant):
    x, guide = features(size="x2")
    kwargs = dict(variant=variant, kernel_size=3, embed_dim=4,
                  out_channels=None if variant == "I" else 5)
    src = randomize_(SAPA(8, **kwargs), seed=1)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst = randomize_(SAPA(8, **kwargs), seed=2)
    assert not torch.equal(dst(x, guide), src(x, guide))
    dst.load_state_dict(torch.load(buf, weights_only=True))
    assert list(dst.state_dict()) == list(src.state_dict())
    assert torch.equal(dst(x, guide), src(x, guide))


def test_state_dict_of_another_variant_is_refused():
    with pytest.raises(RuntimeError, match="gate"):
        SAPA(8, variant="B").load_state_dict(SAPA(8, variant="G").state_dict())


# ---- factory --------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_factory_builds_each_variant(variant):
    name = f"sapa-{variant.lower()}"
    assert is_guided(name)
    m = build_upsampler(name, 8, 8, kernel_size=3)
    assert isinstance(m, SAPA) and m.variant == variant and m.kernel_size == 3
    x, guide = features()
    assert m(x, guide).shape == (2, 8, 8, 10)


# ---- bad input ------------------------------------------------------------------------------

P = pytest.param
BAD_CONFIG = [
    P(dict(variant="X"), ValueError, r"variant must be one of \['I', 'B', 'P', 'G'\], got 'X'",
      id="variant"),
    P(dict(variant="b"), ValueError, r"variant must be one of", id="variant lower"),
    P(dict(variant="I", guide_channels=6), ValueError,
      r"variant 'I' .* needs guide_channels == in_channels, got 6 and 8", id="I needs Cg == C"),
    P(dict(kernel_size=4), ValueError, r"kernel_size must be an odd integer >= 1, got 4",
      id="K even"),
    P(dict(kernel_size=5.0), TypeError, r"kernel_size must be an int", id="K float"),
    P(dict(normalizer="tanh"), ValueError, r"normalizer must be one of", id="normalizer"),
    P(dict(border="same"), ValueError, r"border must be one of \['zeros', 'valid'\]", id="border"),
    P(dict(norm="batch"), ValueError, r"norm must be one of", id="norm"),
    P(dict(decoder_query="paper"), ValueError, r"decoder_query must be one of",
      id="decoder_query"),
    P(dict(embed_dim=0), ValueError, r"embed_dim must be a positive int, got 0", id="embed_dim"),
    P(dict(in_channels=8.0), ValueError, r"in_channels must be a positive int, got 8\.0",
      id="in_channels"),
    P(dict(guide_channels=-1), ValueError, r"guide_channels must be a positive int",
      id="guide_channels"),
    P(dict(out_channels=True), ValueError, r"out_channels must be a positive int",
      id="out_channels"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_CONFIG)
def test_bad_config(kwargs, error, match):
    kwargs = {"in_channels": 8, **kwargs}
    with pytest.raises(error, match=match):
        SAPA(**kwargs)


def test_unknown_upsampler_name():
    with pytest.raises(ValueError, match=r"unknown upsampler 'sapa-x'; known: .*sapa-b"):
        build_upsampler("sapa-x", 8)


# (x, guide) -> bad (x, guide), error type, message pattern
BAD_CALL = [
    P(lambda x, g: (x, None), ValueError, r"SAPA needs guide, .* B x Cg x H' x W'", id="no guide"),
    P(lambda x, g: (x[0], g), ValueError, r"x must be 4-D", id="x 3-D"),
    P(lambda x, g: (x, g.tolist()), TypeError, r"guide must be a torch\.Tensor",
      id="guide not tensor"),
    P(lambda x, g: (x[:, :5], g), ValueError,
      r"x must have in_channels=8 channels, got shape \(2, 5, 4, 5\)", id="x channels"),
    P(lambda x, g: (x, g[:, :7]), ValueError, r"guide must have guide_channels=8 channels",
      id="guide channels"),
    P(lambda x, g: (x, g[:1]), ValueError,
      r"x and guide must have the same batch size, got 2 and 1", id="batch"),
    P(lambda x, g: (x, g[:, :, :3]), ValueError,
      r"guide \(the high-resolution side\) must be at least as large as x: "
      r"got guide spatial size 3x10 and x spatial size 4x5", id="guide smaller"),
    P(lambda x, g: (x, g.double()), TypeError,
      r"guide has dtype torch\.float64 but x has torch\.float32", id="dtype"),
    P(lambda x, g: (x, g.to("meta")), ValueError, r"guide is on meta but x is on cpu",
      id="device"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bad, error, match", BAD_CALL)
def test_bad_call(variant, bad, error, match):
    m = SAPA(8, variant=variant)
    x, guide = bad(*features())
    with pytest.raises(error, match=match):
        m(x, guide)
    with pytest.raises(error, match=match):
        m.kernels(x, guide)
