"""A2U, affinity-aware upsampling, as a guided x2 upsampler: ``a2u``.

Dai, Lu, Shen, "Learning Affinity-Aware Upsampling for Deep Image Matting", CVPR 2021
(code: dongdong93/a2u_matting, ``scripts/BilinearModel.py``, ``InterChannelUpDown``; the
configuration used for matting and for the segmentation comparisons: up kernel ``K = 3``,
encode kernel ``k = 6``, ``U`` and ``V`` shared among channels, one group, rank ``d = 1``).

The kernels come from the encoder feature ``y`` (the guide, ``2H x 2W``), as a low-rank
bilinear form of two stride-2 filterings of ``y``::

    u, v = P_u pool_k(y), P_v pool_k(y)            one k x k filter each, per sample
    a = sum_c LReLU(GN(u *_2 y_c)) LReLU(GN(v *_2 y_c)) / sqrt(Cg)        B x 1 x H x W
    p = P_p pool_1(y)                              B x 4K^2 per sample
    w = softmax_K^2(sigmoid(pixel_shuffle(p a, 2)))                        B x K^2 x 2H x 2W
    out = local_assemble(w, x, K)

(``*_2``: convolution with stride 2; ``pool_k``: adaptive average pooling to ``k x k``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import _checks
from ..ops.dispatch import exporting_onnx
from ..ops.functional import local_assemble
from ._inputs import check_backend, check_guided, positive_int
from .factory import register_upsampler


def _pooling_matrix(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``out x size``: row ``i`` averages ``[floor(i size / out), ceil((i + 1) size / out))``,
    the cells of ``F.adaptive_avg_pool2d``."""
    i = torch.arange(out, device=like.device)[:, None]
    j = torch.arange(size, device=like.device)[None, :]
    inside = (j >= i * size // out) & (j < ((i + 1) * size + out - 1) // out)
    inside = inside.to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


def _adaptive_avg_pool_matmul(x: torch.Tensor, out: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, out)`` as two products with pooling matrices, for ONNX: it
    has no adaptive pooling, and the exporter's translation fixes the cells to the traced
    size when ``out`` does not divide it."""
    rows = _pooling_matrix(x.shape[2], out, x)
    cols = _pooling_matrix(x.shape[3], out, x)
    return torch.einsum("ih,bchw,jw->bcij", rows, x, cols)


def _per_sample_filter_taps(guide: torch.Tensor, f: torch.Tensor, padding: int) -> torch.Tensor:
    """``f[b, i] *_2 guide[b, c]`` (stride-2 correlation, zero padding) summed one filter tap at
    a time: ``B x Cg x H x W`` guide, ``B x F x k x k`` filters (``F`` per sample) ->
    ``B x F x Cg x H_out x W_out``.

    The same sums as the grouped convolutions in ``A2U._filtered``, for ONNX: its ``Conv`` takes
    the group count (here the batch size) as a fixed attribute, so the grouped form would fix
    the batch of an exported model. No ``k^2``-fold intermediate: one strided slice of the
    guide per tap, shared by the ``F`` filters. As fast as the grouped convolution forward but
    twice as slow backward, hence only used in export.
    """
    k = f.shape[-1]
    g = F.pad(guide, (padding,) * 4)
    h_out = (guide.shape[2] + 2 * padding - k) // 2 + 1
    w_out = (guide.shape[3] + 2 * padding - k) // 2 + 1
    out = None
    for i in range(k):
        for j in range(k):
            tap = g[:, None, :, i : i + 2 * h_out - 1 : 2, j : j + 2 * w_out - 1 : 2]
            tap = tap * f[:, :, None, i, j, None, None]
            out = tap if out is None else out + tap
    return out


class A2U(nn.Module):
    """Affinity-aware upsampling (A2U), x2.

    ``forward(x, guide)``: ``x`` the decoder feature ``B x C x H x W``, ``guide`` the encoder
    feature ``B x Cg x 2H x 2W``; returns ``B x C x 2H x 2W``. Only exactly twice ``x``'s size
    is supported (stride-2 filtering, then a x2 pixel shuffle of the kernels); any other guide
    size raises ``ValueError``.

    Parameters: the three 1x1 projections hold ``4K^2 Cg + 2Cg`` weights, SAPA Table 1's count
    (``4K^2 Cg + 2Cg = 38Cg`` for ``K = 3``); their biases add ``4K^2 + 2`` and the two
    GroupNorms ``4Cg``. The released module also builds the downsampling branch (``bconv_DP``);
    an upsampler never uses it, so it is left out.

    Args:
        in_channels: ``C``, channels of ``x``.
        guide_channels: ``Cg``, channels of the guide (default ``C``).
        kernel_size: ``K``, the reassembly window, odd (default 3).
        encode_kernel_size: ``k``, size of the dynamic filters on the guide (default 6); the
            stride-2 filtering pads by ``(k - 1) // 2`` as the code does.
        num_groups: groups of the two GroupNorms; default ``gcd(32, Cg)``, which is the code's
            32 whenever ``Cg`` is a multiple of 32.
        backend: forwarded to ``sapa.local_assemble`` (``None``: automatic).
    """

    # the guide must be exactly this many times x's size (see sapa.deploy.upsampler_axes)
    guide_scale = 2

    def __init__(self, in_channels: int, guide_channels: int | None = None, *,
                 kernel_size: int = 3, encode_kernel_size: int = 6, num_groups: int | None = None,
                 backend: str | None = None):
        super().__init__()
        positive_int("in_channels", in_channels)
        guide_channels = in_channels if guide_channels is None else guide_channels
        positive_int("guide_channels", guide_channels)
        _checks.check_kernel_size(kernel_size)
        positive_int("encode_kernel_size", encode_kernel_size)
        num_groups = math.gcd(32, guide_channels) if num_groups is None else num_groups
        positive_int("num_groups", num_groups)
        if guide_channels % num_groups:
            raise ValueError(
                f"num_groups must divide guide_channels={guide_channels}, got {num_groups}")
        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.kernel_size, self.encode_kernel_size = kernel_size, encode_kernel_size
        self.backend = check_backend(backend)

        c = guide_channels
        self.proj_p = nn.Conv2d(c, 4 * kernel_size * kernel_size, 1)  # code: bconv_UP
        self.proj_u = nn.Conv2d(c, 1, 1)  # code: bconv_U
        self.proj_v = nn.Conv2d(c, 1, 1)  # code: bconv_V
        self.norm_u = nn.GroupNorm(num_groups, c)
        self.norm_v = nn.GroupNorm(num_groups, c)
        # the matting model's init: Xavier-normal with the leaky-ReLU(0.01) gain, zero biases
        gain = nn.init.calculate_gain("leaky_relu", 0.01)
        for conv in (self.proj_p, self.proj_u, self.proj_v):
            nn.init.xavier_normal_(conv.weight, gain)
            nn.init.zeros_(conv.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, guide_channels={self.guide_channels}, "
                f"kernel_size={self.kernel_size}, encode_kernel_size={self.encode_kernel_size}")

    def _check_inputs(self, x, guide):
        check_guided("A2U", x, guide, self.in_channels, self.guide_channels, exact_scale=2)

    def _filtered(self, guide):
        """``(f_u *_2 guide_c, f_v *_2 guide_c)`` for every channel, with the dynamic ``k x k``
        filters ``f = proj(pool_k(guide))`` of each sample: two ``B x Cg x H x W``."""
        k = self.encode_kernel_size
        pad = (k - 1) // 2
        if exporting_onnx():
            pooled = _adaptive_avg_pool_matmul(guide, k)
            f = torch.cat([self.proj_u(pooled), self.proj_v(pooled)], dim=1)  # B x 2 x k x k
            out = _per_sample_filter_taps(guide, f, pad)
            return out[:, 0], out[:, 1]
        pooled = F.adaptive_avg_pool2d(guide, k)
        # channels as the batch and samples as groups: every sample meets its own filter
        return tuple(F.conv2d(guide.transpose(0, 1), proj(pooled), stride=2, padding=pad,
                              groups=guide.shape[0]).transpose(0, 1)
                     for proj in (self.proj_u, self.proj_v))

    def _kernels(self, guide):
        u, v = self._filtered(guide)
        affinity = (F.leaky_relu(self.norm_u(u), 0.01)
                    * F.leaky_relu(self.norm_v(v), 0.01)).sum(1, keepdim=True)
        affinity = affinity / math.sqrt(self.guide_channels)  # B x 1 x H x W
        logits = F.pixel_shuffle(self.proj_p(F.adaptive_avg_pool2d(guide, 1)) * affinity, 2)
        if self.kernel_size == 1:
            return torch.sigmoid(logits)  # as the code: a single weight is not normalised
        return torch.softmax(torch.sigmoid(logits), dim=1)

    @torch.no_grad()
    def kernels(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The upsampling kernels ``B x K*K x 2H x 2W`` (for visualisation; index order as
        ``sapa.local_similarity``)."""
        self._check_inputs(x, guide)
        return self._kernels(guide)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, guide)
        return local_assemble(self._kernels(guide), x, self.kernel_size, backend=self.backend)


@register_upsampler("a2u", guided=True, module=A2U)
def a2u(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """A2U (Dai et al. CVPR 2021): ``A2U(in_channels, guide_channels, **kwargs)``; x2 only."""
    if scale_factor != 2 or isinstance(scale_factor, bool):
        raise ValueError(f"a2u upsamples exactly x2, got scale_factor={scale_factor!r}")
    return A2U(in_channels, guide_channels, **kwargs)
