"""CARAFE: Content-Aware ReAssembly of FEatures (Wang et al., ICCV 2019).

Kernels are predicted from the decoder feature alone and reassemble it with
``sapa.local_assemble``, so CARAFE runs on every backend the SAPA operator has. Semantics and
state-dict names follow mmcv's ``CARAFEPack`` (the authors' code): same weights and input give
the same output.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.functional import local_assemble
from ._inputs import check_backend, odd_int, positive_int
from .factory import register_upsampler
from .learned import FixedScaleUpsampler, xavier_uniform_


class CARAFE(FixedScaleUpsampler):
    """CARAFE upsampling by an integer factor ``s``.

    1. channel compressor: 1x1 conv ``C -> c_mid``;
    2. content encoder: ``k_enc x k_enc`` conv ``c_mid -> G * k_up^2 * s^2``;
    3. pixel shuffle to ``B x G*k_up^2 x sH x sW`` and a softmax over each group's ``k_up^2``;
    4. reassembly: ``out[l'] = sum_p w_p[l'] * x[floor(l' / s) + p]`` over the ``k_up x k_up``
       window, points outside the map counting as zero (the kernels are not renormalised).

    Kernel index ``p = (u + r) * k_up + (w + r)`` (row-major, as ``sapa.local_similarity`` and
    mmcv's kernels); channel ``c`` of ``x`` uses group ``c // (C / G)``.

    ``forward(x, guide=None)``: ``x`` ``B x C x H x W`` -> ``B x C x sH x sW``; a guide is
    ignored but must be ``sH x sW``. ``kernels(x)`` returns the normalised kernels.

    Parameters (Table 1 of the SAPA paper, weights only): ``C c_mid + 36 k_up^2 c_mid`` for
    ``s = 2``, ``k_enc = 3`` (biases add ``c_mid + 4 k_up^2``).

    Args:
        in_channels: ``C``.
        scale_factor: ``s`` (default 2).
        c_mid: compressed channels (paper default 64).
        k_enc: content-encoder kernel size (paper default 3).
        k_up: reassembly kernel size (paper default 5).
        groups: ``G``, kernel groups (mmcv's ``up_group``, default 1); must divide ``C``.
        encoder_dilation: dilation of the content encoder (mmcv's default 1).
        backend: forwarded to ``sapa.local_assemble`` (``None``: automatic).
    """

    def __init__(self, in_channels: int, scale_factor: int = 2, *, c_mid: int = 64,
                 k_enc: int = 3, k_up: int = 5, groups: int = 1, encoder_dilation: int = 1,
                 backend: str | None = None):
        super().__init__(in_channels, scale_factor)
        self.c_mid = positive_int("c_mid", c_mid)
        self.k_enc = odd_int("k_enc", k_enc)
        self.k_up = odd_int("k_up", k_up)
        self.groups = positive_int("groups", groups)
        self.encoder_dilation = positive_int("encoder_dilation", encoder_dilation)
        if in_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels}")
        self.backend = check_backend(backend)
        s = self.scale_factor
        self.channel_compressor = nn.Conv2d(in_channels, c_mid, 1)
        self.content_encoder = nn.Conv2d(
            c_mid, groups * k_up * k_up * s * s, k_enc,
            padding=(k_enc - 1) * encoder_dilation // 2, dilation=encoder_dilation)
        # as CARAFEPack.init_weights: Xavier everywhere, then N(0, 0.001) for the encoder
        xavier_uniform_(self.channel_compressor)
        nn.init.normal_(self.content_encoder.weight, std=0.001)
        nn.init.zeros_(self.content_encoder.bias)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, c_mid={self.c_mid}, k_enc={self.k_enc}, "
                f"k_up={self.k_up}, groups={self.groups}")

    def _kernels(self, x: torch.Tensor) -> torch.Tensor:
        """``B x G*k_up^2 x sH x sW``, softmax-normalised within each group."""
        logits = self.content_encoder(self.channel_compressor(x))
        # channel (g * k_up^2 + p) * s^2 + a * s + b -> channel g * k_up^2 + p at (s i + a, s j + b)
        logits = F.pixel_shuffle(logits, self.scale_factor)
        b, _, h, w = logits.shape
        kk = self.k_up * self.k_up
        return torch.softmax(logits.view(b, self.groups, kk, h, w), dim=2).view(b, -1, h, w)

    @torch.no_grad()
    def kernels(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """The reassembly kernels, ``B x G*k_up^2 x sH x sW`` (``B x k_up^2 x sH x sW`` for the
        default ``G = 1``); index order as ``sapa.local_similarity``. For visualisation."""
        self.check_inputs(x, guide)
        return self._kernels(x)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(x, guide)
        kernels = self._kernels(x)
        b, c, h, w = x.shape
        g = self.groups
        if g > 1:  # each group is its own batch entry of the assembly
            kernels = kernels.reshape(b * g, -1, *kernels.shape[2:])
            x = x.reshape(b * g, c // g, h, w)
        out = local_assemble(kernels, x, self.k_up, backend=self.backend)
        return out.reshape(b, c, *out.shape[2:])


@register_upsampler("carafe", guided=False, module=CARAFE)
def carafe(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """``CARAFE(in_channels, scale_factor, **kwargs)``; ``guide_channels`` is unused."""
    return CARAFE(in_channels, scale_factor, **kwargs)
