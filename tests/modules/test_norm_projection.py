"""``project_normalized``: 1x1 projections of a channel-LayerNormed map computed in NCHW without
keeping the normalised map, against the plain ``conv(ChannelLayerNorm(x))``."""
import pytest
import torch
import torch.nn as nn

from sapa.modules.norms import ChannelLayerNorm, _LayerNormProject, build_norm, project_normalized


def _modules(c=12, dims=(5, 1), bias=True, affine=True, seed=0):
    torch.manual_seed(seed)
    norm = ChannelLayerNorm(c, elementwise_affine=affine, bias=affine)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-1, 1)
    projs = [nn.Conv2d(c, d, 1, bias=bias) for d in dims]
    return norm, projs


def _grads(fn, tensors):
    for t in tensors:
        t.grad = None
    out = fn()
    torch.manual_seed(1)
    out.backward(torch.randn(out.shape))  # not randn_like: it follows the strides
    return out.detach(), [t.grad.clone() for t in tensors]


@pytest.mark.parametrize("bias,affine", [(True, True), (False, True), (True, False)])
def test_same_values_and_gradients_as_conv_of_norm(bias, affine):
    norm, projs = _modules(bias=bias, affine=affine)
    x = (torch.randn(2, 12, 5, 7) * 3 + 2).requires_grad_()  # an offset the norm removes
    params = [x, *norm.parameters(), *(p for m in projs for p in m.parameters())]
    want = _grads(lambda: torch.cat([p(norm(x)) for p in projs], 1), params)
    got = _grads(lambda: torch.cat(project_normalized(x, norm, projs), 1), params)
    torch.testing.assert_close(got[0], want[0])
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _LayerNormProject.apply(*a, 1e-5), (x, w, b))
    norm, projs = _modules(c=6, dims=(3, 1))
    norm, projs = norm.double(), [p.double() for p in projs]
    assert torch.autograd.gradcheck(lambda t: torch.cat(project_normalized(t, norm, projs), 1), (x,))


def test_keeps_no_channel_sized_map_for_the_backward():
    norm, projs = _modules(c=64, dims=(8,))
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        project_normalized(x, norm, projs)
    big = [t for t in saved if t.numel() >= x.numel() and t.untyped_storage().data_ptr()
           != x.untyped_storage().data_ptr()]
    assert big == []


def test_plain_path_without_grad_other_norms_and_under_autocast():
    norm, projs = _modules()
    x = torch.randn(1, 12, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(project_normalized(x, norm, projs)[0], projs[0](norm(x)))
    group = build_norm("group", 12)
    torch.testing.assert_close(project_normalized(x, group, projs)[1], projs[1](group(x)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = project_normalized(x.requires_grad_(), norm, projs)[0]
        assert out.dtype == projs[0](norm(x)).dtype


def test_channels_last_input():
    norm, projs = _modules()
    x = torch.randn(2, 12, 5, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = project_normalized(x, norm, projs)[0]
    torch.testing.assert_close(out, projs[0](norm(x)))
    out.sum().backward()
    assert x.grad.shape == x.shape
