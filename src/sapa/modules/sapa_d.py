"""SAPA-D: SAPA with a dynamic kernel shape (the authors' extension, arXiv 2307.08198).

Follows ``SAPADeform`` of the authors' code (``tiny-smart/sapa``, ``sapa_deform.py``): its
defaults, its offset generator and its initialisation.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import _checks, _normalizers
from ..ops._geometry import nearest_upsample
from ..ops.sampled import sampled_attention, sampled_similarity, sampling_locations
from ._inputs import check_backend, check_guided, positive_int
from .factory import register_upsampler
from .norms import NORMS, build_norm
from .pointwise import Pointwise


class SAPAD(nn.Module):
    """SAPA over ``N`` learned sampling points per group instead of a fixed ``K x K`` window.

    ``forward(x, guide)``: ``x`` the decoder feature ``B x C x H x W``, ``guide`` the encoder
    feature ``B x Cg x H' x W'``; returns ``B x C x H' x W'``. With ``n`` the channel norm chosen
    by ``norm`` and 1x1 convolutions ``Pq, Pk`` (to ``G*d`` channels) and ``Po``::

        q = Pq n(guide)                                  B x G*d x H' x W'
        k = Pk n(x)                                      B x G*d x H x W
        offsets = pixel_shuffle(Po n(x), s)              B x 2*G*N x H' x W'   (high_offset)
                  nearest_upsample(Po n(x), (H', W'))                          (otherwise)
        out = sampled_attention(q, k, x, offsets, groups=G, num_points=N)

    Every output point reads its ``N`` keys and values per group at its projective location
    plus its own offsets (no fixed initial pattern: the offsets start near zero, so the module
    starts close to nearest-neighbour upsampling). ``high_offset=True`` predicts a separate
    offset set for each of the ``s x s`` output points of a low-res point and needs
    ``H' = s H, W' = s W``; ``high_offset=False`` shares one set among them and takes any
    ``H' >= H, W' >= W``.

    Args:
        in_channels: ``C``, channels of ``x`` (the values); divisible by ``groups``.
        guide_channels: ``Cg`` (default ``C``).
        scale_factor: ``s``; with ``high_offset``, ``H' / H``.
        num_points: ``N`` (authors' default 9).
        groups: ``G`` (authors' default 4).
        embed_dim: ``d``, query/key channels *per group* (authors' default 32).
        normalizer: as ``sapa.sapa_attention`` (the authors use softmax).
        norm: ``"none"`` (the authors' default, ``norm=False``), ``"group"`` (their
            ``norm=True``: GroupNorm with 32 groups) or ``"layer"`` (the NeurIPS paper's LN).
        high_offset: as above (authors' default ``True``).
        bias: biases on the three projections (authors' ``qkv_bias=True``).
        backend: forwarded to ``sampled_attention`` (``None``: automatic).
    """

    def __init__(
        self,
        in_channels: int,
        guide_channels: int | None = None,
        *,
        scale_factor: int = 2,
        num_points: int = 9,
        groups: int = 4,
        embed_dim: int = 32,
        normalizer: str = "softmax",
        norm: str = "none",
        high_offset: bool = True,
        bias: bool = True,
        backend: str | None = None,
    ):
        super().__init__()
        guide_channels = in_channels if guide_channels is None else guide_channels
        for name, val in (("in_channels", in_channels), ("guide_channels", guide_channels),
                          ("scale_factor", scale_factor), ("num_points", num_points),
                          ("groups", groups), ("embed_dim", embed_dim)):
            positive_int(name, val)
        if in_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by groups ({groups}): "
                "each group reassembles its own C / groups value channels")
        _checks.check_choice("normalizer", normalizer, _checks.NORMALIZERS)
        _checks.check_choice("norm", norm, NORMS)
        check_backend(backend, "sampled")

        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.scale_factor, self.num_points, self.groups = scale_factor, num_points, groups
        self.embed_dim, self.normalizer, self.norm = embed_dim, normalizer, norm
        self.high_offset, self.backend = bool(high_offset), backend

        self.norm_guide = build_norm(norm, guide_channels)
        self.norm_x = build_norm(norm, in_channels)
        self.q = Pointwise(guide_channels, groups * embed_dim, bias=bias)
        self.k = Pointwise(in_channels, groups * embed_dim, bias=bias)
        offset_channels = 2 * groups * num_points * (scale_factor**2 if high_offset else 1)
        self.offset = Pointwise(in_channels, offset_channels, bias=bias)
        for conv in (self.q, self.k, self.offset):  # as the authors' _init_weights
            nn.init.normal_(conv.weight, std=0.02)
            if bias:
                nn.init.zeros_(conv.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, guide_channels={self.guide_channels}, "
                f"scale_factor={self.scale_factor}, num_points={self.num_points}, "
                f"groups={self.groups}, embed_dim={self.embed_dim}, "
                f"normalizer={self.normalizer!r}, norm={self.norm!r}, "
                f"high_offset={self.high_offset}")

    @property
    def guide_scale(self) -> int | None:
        """``scale_factor`` with ``high_offset`` (the guide must be exactly that many times
        ``x``'s size), else ``None`` (any ``H' >= H``); see ``sapa.deploy.upsampler_axes``."""
        return self.scale_factor if self.high_offset else None

    def _check_inputs(self, x, guide):
        check_guided("SAPA-D", x, guide, self.in_channels, self.guide_channels)
        s = self.scale_factor
        if self.high_offset and tuple(guide.shape[2:]) != (s * x.shape[2], s * x.shape[3]):
            raise ValueError(
                f"with high_offset=True the guide must be scale_factor={s} times the size of x, "
                f"{s * x.shape[2]}x{s * x.shape[3]}, got {guide.shape[2]}x{guide.shape[3]}; "
                "use high_offset=False for other sizes")

    def query_key_offsets(self, x: torch.Tensor, guide: torch.Tensor):
        """``(q, k, offsets)``: ``B x G*d x H' x W'``, ``B x G*d x H x W``, ``B x 2GN x H' x W'``."""
        xn = self.norm_x(x)
        q = self.q(self.norm_guide(guide))
        k = self.k(xn)
        off = self.offset(xn)
        if self.high_offset:
            off = F.pixel_shuffle(off, self.scale_factor)
        else:
            off = nearest_upsample(off, guide.shape[-2:])
        return q, k, off

    @torch.no_grad()
    def kernels(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The weights ``B x G x N x H' x W'`` of each output point's sampled points (for
        visualisation, with ``sampling_locations``)."""
        self._check_inputs(x, guide)
        q, k, off = self.query_key_offsets(x, guide)
        scores = sampled_similarity(q, k, off, groups=self.groups, num_points=self.num_points,
                                    backend=self.backend)
        b, g, n, h, w = scores.shape
        flat = scores.reshape(b * g, n, h, w)
        st = _normalizers.stat(flat, self.normalizer)
        return _normalizers.kernel(flat, st[:, None], self.normalizer).view(b, g, n, h, w)

    @torch.no_grad()
    def sampling_locations(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Where each output point reads: ``B x G x N x 2 x H' x W'`` (``x`` then ``y``, in
        pixels of ``x``'s map)."""
        self._check_inputs(x, guide)
        _, _, off = self.query_key_offsets(x, guide)
        return sampling_locations(off, x.shape[-2:], groups=self.groups,
                                  num_points=self.num_points)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, guide)
        q, k, off = self.query_key_offsets(x, guide)
        return sampled_attention(q, k, x, off, groups=self.groups, num_points=self.num_points,
                                 normalizer=self.normalizer, backend=self.backend)


@register_upsampler("sapa-d", guided=True, module=SAPAD)
def sapa_d(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """SAPA-D: ``SAPAD(in_channels, guide_channels, scale_factor=scale_factor, **kwargs)``."""
    return SAPAD(in_channels, guide_channels, scale_factor=scale_factor, **kwargs)
