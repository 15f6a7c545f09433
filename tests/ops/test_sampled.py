"""SAPA-D's sampled attention: reference against a plain bilinear loop (the authors' CUDA
semantics) and against the window operator, lean against reference, gradcheck, validation."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sapa.ops import _checks, choose_backend
from sapa.ops._geometry import nearest_upsample, window_offsets
from sapa.ops._library import sampled_attention_macs
from sapa.ops.backends import lean
from sapa.ops.backends.reference import sampled as sampled_reference
from sapa.ops.functional import sapa_attention
from sapa.ops.sampled import sampled_attention, sampled_similarity, sampling_locations

BACKENDS = ("reference", "lean")


def make(b=2, groups=2, d=3, n=4, c=4, size=(4, 5), out=(9, 11), dtype=torch.float64,
         spread=1.5, seed=0):
    """Random ``q, k, v, offsets``; offsets spread enough that some points fall outside."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, groups * d, *out, generator=g, dtype=dtype)
    k = torch.randn(b, groups * d, *size, generator=g, dtype=dtype)
    v = torch.randn(b, c, *size, generator=g, dtype=dtype)
    off = spread * torch.randn(b, 2 * groups * n, *out, generator=g, dtype=dtype)
    return q, k, v, off


def _bilinear(x, y, xs):
    """The authors' ``deformable_im2col_bilinear``: ``x`` a ``c x H x W`` map, ``(y, xs)`` the
    row and column; corners outside read 0 and a point with no corner inside reads 0."""
    c, h, w = x.shape
    if not (y > -1 and y < h and xs > -1 and xs < w):
        return x.new_zeros(c)
    y0, x0 = math.floor(y), math.floor(xs)
    ly, lx = y - y0, xs - x0
    val = x.new_zeros(c)
    for yy, xx, wt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                       (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        if 0 <= yy < h and 0 <= xx < w:
            val = val + wt * x[:, yy, xx]
    return val


def loop_sampled_attention(q, k, v, off, groups, n):
    """Point by point, as the authors' ``DeformQKForward`` / ``DeformAVForward`` do it."""
    b, _, hq, wq = q.shape
    h, w = k.shape[-2:]
    d, c = q.shape[1] // groups, v.shape[1] // groups
    out = v.new_zeros(b, v.shape[1], hq, wq)
    for bi in range(b):
        for g in range(groups):
            for i in range(hq):
                for j in range(wq):
                    li, lj = i * h // hq, j * w // wq
                    ks, vs = [], []
                    for p in range(n):
                        ch = 2 * (g * n + p)
                        y, x = li + off[bi, ch + 1, i, j].item(), lj + off[bi, ch, i, j].item()
                        ks.append(_bilinear(k[bi, g * d : (g + 1) * d], y, x))
                        vs.append(_bilinear(v[bi, g * c : (g + 1) * c], y, x))
                    s = torch.stack([(q[bi, g * d : (g + 1) * d, i, j] * kk).sum() for kk in ks])
                    wts = torch.softmax(s, 0)
                    out[bi, g * c : (g + 1) * c, i, j] = sum(wt * vv for wt, vv in zip(wts, vs))
    return out


def test_reference_matches_the_authors_bilinear_loop():
    q, k, v, off = make(b=1, groups=2, d=2, n=3, c=4, size=(3, 4), out=(7, 8))
    ref = sampled_attention(q, k, v, off, groups=2, num_points=3, backend="reference")
    torch.testing.assert_close(ref, loop_sampled_attention(q, k, v, off, 2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size,out", [((4, 5), (8, 10)), ((4, 5), (9, 11))])
def test_window_offsets_reproduce_the_window_operator(backend, size, out):
    # N = K*K points at the integer window offsets read exactly the K x K window (zeros outside)
    kernel_size = 3
    q, k, v, _ = make(b=2, groups=1, d=3, c=5, size=size, out=out)
    off = torch.tensor([[w, u] for u, w in window_offsets(kernel_size)], dtype=q.dtype)
    off = off.reshape(1, -1, 1, 1).expand(2, -1, *out)
    got = sampled_attention(q, k, v, off, groups=1, num_points=9, backend=backend)
    want = sapa_attention(q, k, v, kernel_size, border="zeros", backend="reference")
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_are_independent(backend):
    # group g of the result is the one-group operator on group g's channels and offsets
    groups, n, d, c = 3, 2, 2, 2
    q, k, v, off = make(groups=groups, d=d, n=n, c=groups * c)
    got = sampled_attention(q, k, v, off, groups=groups, num_points=n, backend=backend)
    for g in range(groups):
        one = sampled_attention(q[:, g * d : (g + 1) * d], k[:, g * d : (g + 1) * d],
                                v[:, g * c : (g + 1) * c], off[:, 2 * g * n : 2 * (g + 1) * n],
                                groups=1, num_points=n, backend="reference")
        torch.testing.assert_close(got[:, g * c : (g + 1) * c], one)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_offsets_give_nearest_upsampling(backend):
    q, k, v, off = make(out=(9, 11))
    got = sampled_attention(q, k, v, torch.zeros_like(off), groups=2, num_points=4,
                            backend=backend)
    torch.testing.assert_close(got, nearest_upsample(v, (9, 11)))


@pytest.mark.parametrize("normalizer", _checks.NORMALIZERS)
@pytest.mark.parametrize("out", [(8, 10), (9, 11)])
def test_lean_matches_reference_forward_and_backward(normalizer, out):
    q, k, v, off = [t.requires_grad_() for t in make(out=out)]
    grads = {}
    for backend in BACKENDS:
        y = sampled_attention(q, k, v, off, groups=2, num_points=4, normalizer=normalizer,
                              backend=backend)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        grads[backend] = (y, *torch.autograd.grad(y, (q, k, v, off), gy))
    for name, a, b in zip(("out", "q", "k", "v", "offsets"), grads["lean"], grads["reference"]):
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    # odd output size (not a multiple), points outside the map, every input including offsets
    q, k, v, off = [t.requires_grad_() for t in
                    make(b=1, groups=2, d=2, n=3, c=4, size=(3, 3), out=(5, 7))]
    fn = lambda *t: sampled_attention(*t, groups=2, num_points=3, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v, off))


@pytest.mark.parametrize("normalizer", ["sigmoid", "none"])
def test_gradcheck_lean_other_normalizers(normalizer):
    q, k, v, off = [t.requires_grad_() for t in
                    make(b=1, groups=1, d=2, n=3, c=2, size=(3, 3), out=(5, 6))]
    fn = lambda *t: sampled_attention(*t, groups=1, num_points=3, normalizer=normalizer,  # noqa: E731
                                      backend="lean")
    assert torch.autograd.gradcheck(fn, (q, k, v, off))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lean_half_precision_computes_in_float32(dtype):
    """Half-precision inputs are computed in float32 and the results rounded once: the same as
    the float32 reference on the same (rounded) inputs, rounded to ``dtype``, within one unit in
    the last place. Computing in ``dtype`` throughout is off by more (a deliberately wrong
    lean, patched to compute in ``dtype``, failed here: 8 ulps off in float16, 4.5 in
    bfloat16)."""
    q, k, v, off = (t.to(dtype) for t in make(dtype=torch.float32, spread=0.5))
    leaves = [t.clone().requires_grad_() for t in (q, k, v, off)]
    got = sampled_attention(*leaves, groups=2, num_points=4, backend="lean")
    assert got.dtype == dtype
    wide = [t.float().requires_grad_() for t in (q, k, v, off)]
    want = sampled_attention(*wide, groups=2, num_points=4, backend="reference")
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(got.float(), want.detach().to(dtype).float(), rtol=ulp, atol=ulp)
    # the backward too: its float32 gradients, rounded once (a few ulps: it reuses the
    # rounded output in delta = <grad, out>)
    g = torch.randn(got.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    for a, b in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, wide, g.float())):
        assert a.dtype == dtype
        scale = b.abs().max().item()
        torch.testing.assert_close(a.float(), b.to(dtype).float(), rtol=4 * ulp,
                                   atol=4 * ulp * scale)


def test_lean_saves_no_per_point_values():
    # the reference keeps the N x C x H' x W' sampled values for its backward; lean must not
    b, groups, n, c, out = 1, 2, 8, 16, (12, 12)
    q, k, v, off = [t.requires_grad_() for t in make(b=b, groups=groups, n=n, c=c, out=out)]
    per_point_values = b * n * c * out[0] * out[1]
    largest = {}
    for backend in BACKENDS:
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t,
                                                      lambda t: t):
            sampled_attention(q, k, v, off, groups=groups, num_points=n, backend=backend)
        largest[backend] = max(sizes)
    assert largest["reference"] >= per_point_values
    # lean saves its inputs, the output and a B x G x H' x W' statistic: nothing N times larger
    assert largest["lean"] == max(t.numel() for t in (q, k, v, off))
    assert largest["lean"] < per_point_values


@pytest.mark.parametrize("backend", BACKENDS)
def test_similarity(backend):
    q, k, v, off = make()
    s = sampled_similarity(q, k, off, groups=2, num_points=4, backend=backend)
    assert s.shape == (2, 2, 4, 9, 11)
    # softmax of the scores are the weights that reassemble v
    w = torch.softmax(s, dim=2)
    grid = sampled_reference.sampling_grid(off, 2, 4, k.shape[-2:])  # B*G x N x H' x W' x 2
    vs = torch.stack([sampled_reference.sample(v.reshape(4, 2, 4, 5), grid[:, p])
                      for p in range(4)], 1)  # B*G x N x C/G x H' x W'
    want = (w.reshape(4, 4, 1, 9, 11) * vs).sum(1).reshape(2, 4, 9, 11)
    got = sampled_attention(q, k, v, off, groups=2, num_points=4, backend=backend)
    torch.testing.assert_close(got, want)


def test_sampling_locations_layout():
    off = torch.zeros(1, 2 * 2 * 3, 4, 6)
    off[0, 2 * (1 * 3 + 2)] = 0.25  # group 1, point 2: x
    off[0, 2 * (1 * 3 + 2) + 1] = -0.5  # group 1, point 2: y
    loc = sampling_locations(off, (2, 3), groups=2, num_points=3)
    assert loc.shape == (1, 2, 3, 2, 4, 6)
    cols = torch.tensor([0, 0, 1, 1, 2, 2.0])
    rows = torch.tensor([0, 0, 1, 1.0])
    torch.testing.assert_close(loc[0, 0, 0, 0], cols.expand(4, 6))
    torch.testing.assert_close(loc[0, 0, 0, 1], rows[:, None].expand(4, 6))
    torch.testing.assert_close(loc[0, 1, 2, 0], cols.expand(4, 6) + 0.25)
    torch.testing.assert_close(loc[0, 1, 2, 1], rows[:, None].expand(4, 6) - 0.5)


def test_automatic_backend_is_lean_and_counted():
    q, k, v, off = make(dtype=torch.float32)
    assert choose_backend(q, k, v, off, family="sampled") is lean
    with FlopCounterMode(display=False) as counter:
        sampled_attention(q, k, v, off, groups=2, num_points=4)
    counts = counter.get_flop_counts()["Global"]
    assert counts == {torch.ops.sapa.sampled_attention: 2 * sampled_attention_macs(
        q.shape, v.shape, 4)}
    assert counts[torch.ops.sapa.sampled_attention] == 2 * 2 * 9 * 11 * 4 * 5 * (6 + 4)


def test_backward_flops_are_counted():
    q, k, v, off = [t.requires_grad_() for t in make(dtype=torch.float32)]
    with FlopCounterMode(display=False) as counter:
        sampled_attention(q, k, v, off, groups=2, num_points=4).sum().backward()
    counts = counter.get_flop_counts()["Global"]
    assert counts[torch.ops.sapa.sampled_attention_backward] == 2 * 2 * 99 * 4 * (19 * 6 + 18 * 4)


def test_opcheck():
    q, k, v, off = [t.requires_grad_() for t in make(b=1, out=(8, 10))]
    torch.library.opcheck(torch.ops.sapa.sampled_attention.default,
                          (q, k, v, off, 2, 4, "softmax", "lean"))


@pytest.mark.slow
def test_compile_fullgraph():
    q, k, v, off = [t.requires_grad_() for t in make(dtype=torch.float32)]
    eager = lambda *t: sampled_attention(*t, groups=2, num_points=4)  # noqa: E731
    compiled = torch.compile(eager, fullgraph=True)
    want, got = eager(q, k, v, off), compiled(q, k, v, off)
    torch.testing.assert_close(got, want)
    gy = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, (q, k, v, off), gy),
                    torch.autograd.grad(want, (q, k, v, off), gy)):
        torch.testing.assert_close(a, b)


def test_dispatch_logs_the_backend(caplog):
    q, k, v, off = make()
    with caplog.at_level("DEBUG", logger="sapa.dispatch"):
        sampled_attention(q, k, v, off, groups=2, num_points=4)
        sampled_attention(q, k, v, off, groups=2, num_points=4, backend="reference")
    assert "backend lean (automatic)" in caplog.text


# ---- validation ------------------------------------------------------------------------------

def _call(q, k, v, off, **kw):
    kw = {"groups": 2, "num_points": 4, **kw}
    return sampled_attention(q, k, v, off, **kw)


@pytest.mark.parametrize(
    "mutate,kwargs,error,match",
    [
        (lambda q, k, v, o: (q[0], k, v, o), {}, ValueError, "q must be 4-D"),
        (lambda q, k, v, o: (q, k.tolist(), v, o), {}, TypeError, "k must be a torch.Tensor"),
        (lambda q, k, v, o: (q, k, v.long(), o), {}, TypeError, "v must be a floating-point"),
        (lambda q, k, v, o: (q, k, v, o.float()), {}, TypeError, "offsets has dtype"),
        (lambda q, k, v, o: (q, k, v[:1], o), {}, ValueError, "batch size"),
        (lambda q, k, v, o: (q, k[:, :4], v, o), {}, ValueError, "same number of channels"),
        (lambda q, k, v, o: (q[:, :5], k[:, :5], v, o), {}, ValueError, "divisible by groups"),
        (lambda q, k, v, o: (q, k, v[:, :3], o), {}, ValueError, "channels of v"),
        (lambda q, k, v, o: (q, k, v[..., :4], o), {}, ValueError, "same spatial size"),
        (lambda q, k, v, o: (q[..., :3, :], k, v, o[..., :3, :]), {}, ValueError, "at least as large"),
        (lambda q, k, v, o: (q, k, v, o[:, :8]), {}, ValueError, r"offsets must be B x 2\*groups"),
        (lambda q, k, v, o: (q, k, v, o[..., :5]), {}, ValueError, "offsets must be"),
        (lambda q, k, v, o: (q, k, v, o), {"num_points": 3}, ValueError, "num_points=3"),
        (lambda q, k, v, o: (q, k, v, o), {"groups": 0}, ValueError, "groups must be >= 1"),
        (lambda q, k, v, o: (q, k, v, o), {"groups": 2.0}, TypeError, "groups must be an int"),
        (lambda q, k, v, o: (q, k, v, o), {"normalizer": "exp"}, ValueError, "normalizer"),
        (lambda q, k, v, o: (q, k, v, o), {"backend": "cuda"}, ValueError, "backend must be"),
    ],
)
def test_validation(mutate, kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(*mutate(*make()), **kwargs)


def test_sampling_locations_validation():
    with pytest.raises(ValueError, match="2\\*groups\\*num_points = 12"):
        sampling_locations(torch.zeros(1, 10, 4, 4), (2, 2), groups=2, num_points=3)
