"""``sapa.SAPA`` against the authors' release (poppinace/sapa ``SAPA.py`` / ``SAPAExp.py``).

The release runs its CUDA extension (``sim``, ``atn``); here both are written in plain PyTorch
from its kernels (``qk_cuda_kernel.cu``, ``atn_cuda_kernel.cu``): output point ``(i', j')``
meets the ``K x K`` window centred on ``(i' // s, j' // s)``, index ``p = row * K + col``;
keys outside the map give score 0 and values outside give 0 (``F.unfold`` with padding
``K // 2``), the softmax runs over all ``K^2`` scores and nothing scales them by ``1/sqrt(d)``.
Everything else (channels-last ``LayerNorm`` on both inputs, ``Linear`` projections, values the
raw decoder feature, SAPA-G's gate) is the release's module, with its state-dict names. The
weights are copied across and the two are compared in float64, forward and backward.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sapa import SAPA


def nearest_interpolate(t, s):
    """The release's ``nearest_interpolate``: channels-last ``B x H x W x C`` -> ``sH x sW``."""
    b, h, w, c = t.shape
    t = t.repeat(1, 1, 1, s * s).reshape(b, h, w, s, s, c)
    return t.permute(0, 1, 3, 2, 4, 5).reshape(b, s * h, s * w, c)


def windows(t, kernel_size, s):
    """``B x H x W x C`` -> ``B x sH x sW x K^2 x C``: each output point's zero-padded window
    around ``(i' // s, j' // s)``."""
    b, h, w, c = t.shape
    cols = F.unfold(t.permute(0, 3, 1, 2), kernel_size, padding=kernel_size // 2)
    cols = cols.view(b, c, kernel_size * kernel_size, h, w).permute(0, 3, 4, 2, 1)
    return cols.repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)


def sim(q, k, kernel_size, s):
    """The release's ``sim``: ``B x sH x sW x K^2`` scores."""
    return torch.einsum("bijc,bijpc->bijp", q, windows(k, kernel_size, s))


def atn(attn, v, kernel_size, s):
    """The release's ``atn``: ``B x sH x sW x C``."""
    return torch.einsum("bijp,bijpc->bijc", attn, windows(v, kernel_size, s))


class ReleaseSAPAExp(nn.Module):
    """``SAPAExp`` of the release (``q_mode`` ``"encoder_only"`` = SAPA-B, ``"gate"`` =
    SAPA-G); ``SAPA.py`` is its ``"encoder_only"`` case without a value projection."""

    def __init__(self, dim_y, dim_x, out_dim, q_mode, up_factor, up_kernel_size, embedding_dim):
        super().__init__()
        self.up_factor, self.up_kernel_size, self.q_mode = up_factor, up_kernel_size, q_mode
        self.norm_y, self.norm_x = nn.LayerNorm(dim_y), nn.LayerNorm(dim_x)
        if q_mode == "encoder_only":
            self.q = nn.Linear(dim_y, embedding_dim)
        else:
            self.qy = nn.Linear(dim_y, embedding_dim)
            self.qx = nn.Linear(dim_x, embedding_dim)
            self.gate = nn.Linear(dim_x, 1)
        self.k = nn.Linear(dim_x, embedding_dim)
        if out_dim != dim_x:
            self.v = nn.Linear(dim_x, out_dim)

    def forward(self, y, x):
        y = y.permute(0, 2, 3, 1).contiguous()
        x = x.permute(0, 2, 3, 1).contiguous()
        y = self.norm_y(y)
        x_ = self.norm_x(x)
        if self.q_mode == "encoder_only":
            q = self.q(y)
        else:
            gate = nearest_interpolate(torch.sigmoid(self.gate(x_)), self.up_factor)
            q = gate * self.qy(y) + (1 - gate) * self.qx(nearest_interpolate(x, self.up_factor))
        k = self.k(x_)
        if hasattr(self, "v"):
            x = self.v(x_)
        attn = F.softmax(sim(q, k, self.up_kernel_size, self.up_factor), dim=-1)
        return atn(attn, x, self.up_kernel_size, self.up_factor).permute(0, 3, 1, 2).contiguous()


# the release's parameter -> ours (1x1 convolutions hold the Linear weights as C_out x C_in x 1 x 1)
NAMES = {
    "norm_y": "norm_guide", "norm_x": "norm_x", "q": "q", "qy": "q", "qx": "q_x",
    "gate": "gate", "k": "k", "v": "v",
}


def ours_of(name):
    module, _, kind = name.partition(".")
    return f"{NAMES[module]}.{kind}"


def copy_weights(ours: SAPA, release: ReleaseSAPAExp) -> None:
    src = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in release.named_parameters():
            p.copy_(src[ours_of(name)].reshape(p.shape))
    assert {ours_of(n) for n, _ in release.named_parameters()} == set(src), "unmatched weights"


def randomize_(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5
                    + (1.0 if p.dim() == 1 else 0.0))
    return module


CASES = [
    # variant, q_mode, scale, C, Cg, out_channels
    ("B", "encoder_only", 2, 6, 5, None),  # SAPA.py
    ("B", "encoder_only", 3, 6, 6, 4),  # with the value projection
    ("G", "gate", 2, 6, 5, None),
    ("G", "gate", 3, 4, 7, None),
    ("G", "gate", 2, 6, 5, 3),
]


@pytest.mark.parametrize("variant, q_mode, scale, c, cg, out_channels", CASES)
def test_matches_the_release_forward_and_backward(forced_backend, variant, q_mode, scale, c, cg,
                                                  out_channels):
    k_size, d = 3, 4
    ours = SAPA(c, cg, variant=variant, kernel_size=k_size, embed_dim=d,
                out_channels=out_channels, decoder_query="official", backend=forced_backend)
    randomize_(ours).double()
    release = ReleaseSAPAExp(cg, c, out_channels or c, q_mode, scale, k_size, d).double()
    copy_weights(ours, release)

    gen = torch.Generator().manual_seed(1)
    h, w = 4, 5  # 4 x 5 with K = 3: windows cut by every border
    x = torch.randn(2, c, h, w, generator=gen, dtype=torch.float64)
    y = torch.randn(2, cg, scale * h, scale * w, generator=gen, dtype=torch.float64)
    x1, y1 = x.clone().requires_grad_(), y.clone().requires_grad_()
    x2, y2 = x.clone().requires_grad_(), y.clone().requires_grad_()

    out, want = ours(x1, y1), release(y2, x2)  # the release's call order is (y, x)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(grad)
    want.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(y1.grad, y2.grad, rtol=1e-11, atol=1e-11)
    ours_params = dict(ours.named_parameters())
    for name, p in release.named_parameters():
        torch.testing.assert_close(ours_params[ours_of(name)].grad.reshape(p.shape), p.grad,
                                   rtol=1e-11, atol=1e-11, msg=lambda m, name=name: f"{name}: {m}")


def test_table1_sapa_g_is_not_the_release():
    """The default ``decoder_query="table1"`` is a different module (the paper's text): it must
    not silently coincide with the release, or the option would mean nothing."""
    ours = randomize_(SAPA(6, 5, variant="G", kernel_size=3, embed_dim=4)).double()
    official = randomize_(SAPA(6, 5, variant="G", kernel_size=3, embed_dim=4,
                               decoder_query="official")).double()
    release = ReleaseSAPAExp(5, 6, 6, "gate", 2, 3, 4).double()
    copy_weights(official, release)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(dict(official.named_parameters())[name])
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    y = torch.randn(2, 5, 8, 10, dtype=torch.float64)
    with torch.no_grad():
        assert (ours(x, y) - release(y, x)).abs().max() > 1e-3
