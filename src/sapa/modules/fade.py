"""FADE as a guided upsampler: ``fade``.

Lu, Liu, Fu, Cao, "FADE: Fusing the Assets of Decoder and Encoder for Task-Agnostic
Upsampling", ECCV 2022 (code: poppinace/fade, ``FADE_H2L.py``, ``FADE_L2H.py``).

Kernels come from both features through *semi-shift convolution*: one ``3 x 3`` content
encoder, shared, slides over the compressed encoder feature at high resolution and over the
compressed decoder feature at low resolution, and each output point adds its own encoder
response to the response of the decoder point it lies on. The decoder is reassembled with
those kernels (CARAFE-style) and a gate from the decoder mixes in the encoder feature::

    logits = E(Ce y) + NN(E(Cd x))                  B x K^2 x H' x W'   (E: 3x3 conv, with bias)
    w = softmax_K^2(logits)
    g = NN(sigmoid(G x))                            B x 1 x H' x W'     (G: 1x1 conv)
    out = g * y + (1 - g) * local_assemble(w, x, K)

``FADE_H2L.py`` computes the encoder term with four shifted stride-2 convolutions and a
space-to-depth shuffle; that is the ``3 x 3`` convolution with padding 1 at high resolution,
which ``FADE_L2H.py`` (and this module) compute directly. Both add the content encoder's bias
twice, once per term; so does this module.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import _checks
from ..ops._geometry import nearest_upsample
from ..ops.functional import local_assemble
from ._inputs import check_backend, check_guided, positive_int
from .factory import register_upsampler


class FADE(nn.Module):
    """FADE upsampling (semi-shift kernel generation, CARAFE reassembly, decoder-driven gate).

    ``forward(x, guide)``: ``x`` the decoder feature ``B x C x H x W``, ``guide`` the encoder
    feature ``B x C x H' x W'`` with the same channels (the gate mixes it into the output);
    returns ``B x C x H' x W'``. Any ``H' >= H, W' >= W`` works: nearest-neighbour steps and
    the reassembly window use the projective location ``floor(i' * H / H')`` of
    ``sapa.local_assemble``. The released code handles ``H' = 2H`` only, where this is exactly
    its ``F.interpolate(scale_factor=2)``; ``x4`` and odd sizes are this generalisation.

    Parameters (``e`` the embedding, ``K`` the up kernel, ``k`` the kernel encoder):
    ``e(2C + 1) + (e k^2 + 1) K^2 + C + 1``; with the defaults ``e = 64, K = 5, k = 3``:
    ``129C + 14490``.

    Args:
        in_channels: ``C``, channels of ``x`` and of the guide.
        guide_channels: must equal ``C`` (default ``C``).
        kernel_size: ``K``, the up kernel, odd (default 5).
        encoder_kernel_size: ``k``, the content encoder, odd (default 3).
        embed_dim: ``e``, channels of both compressors (default 64).
        backend: forwarded to ``sapa.local_assemble`` (``None``: automatic).
    """

    def __init__(self, in_channels: int, guide_channels: int | None = None, *,
                 kernel_size: int = 5, encoder_kernel_size: int = 3, embed_dim: int = 64,
                 backend: str | None = None):
        super().__init__()
        positive_int("in_channels", in_channels)
        guide_channels = in_channels if guide_channels is None else guide_channels
        positive_int("guide_channels", guide_channels)
        if guide_channels != in_channels:
            raise ValueError(
                "FADE's gate mixes the guide into the output and needs guide_channels == "
                f"in_channels, got {guide_channels} and {in_channels}")
        _checks.check_kernel_size(kernel_size)
        if positive_int("encoder_kernel_size", encoder_kernel_size) % 2 == 0:
            raise ValueError(f"encoder_kernel_size must be odd (padding k // 2 keeps the size), "
                             f"got {encoder_kernel_size}")
        positive_int("embed_dim", embed_dim)
        self.in_channels = self.guide_channels = in_channels
        self.kernel_size, self.encoder_kernel_size, self.embed_dim = (
            kernel_size, encoder_kernel_size, embed_dim)
        self.backend = check_backend(backend)

        c = in_channels
        self.gate = nn.Conv2d(c, 1, 1)
        self.compress_guide = nn.Conv2d(c, embed_dim, 1)
        self.compress_x = nn.Conv2d(c, embed_dim, 1, bias=False)
        self.content_encoder = nn.Conv2d(embed_dim, kernel_size * kernel_size,
                                         encoder_kernel_size, padding=encoder_kernel_size // 2)
        for conv in (self.gate, self.compress_guide, self.compress_x, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)  # as the code (mmcv xavier_init, uniform)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, kernel_size={self.kernel_size}, "
                f"encoder_kernel_size={self.encoder_kernel_size}, embed_dim={self.embed_dim}")

    def _check_inputs(self, x, guide):
        check_guided("FADE", x, guide, self.in_channels, self.guide_channels)

    def _kernels(self, x, guide):
        size = guide.shape[-2:]
        logits = (self.content_encoder(self.compress_guide(guide))
                  + nearest_upsample(self.content_encoder(self.compress_x(x)), size))
        return torch.softmax(logits, dim=1)

    @torch.no_grad()
    def kernels(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The upsampling kernels ``B x K*K x H' x W'`` (for visualisation; index order as
        ``sapa.local_similarity``)."""
        self._check_inputs(x, guide)
        return self._kernels(x, guide)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, guide)
        up = local_assemble(self._kernels(x, guide), x, self.kernel_size, backend=self.backend)
        # sigmoid commutes with nearest upsampling: take it at low resolution
        g = nearest_upsample(torch.sigmoid(self.gate(x)), guide.shape[-2:])
        return g * guide + (1 - g) * up


@register_upsampler("fade", guided=True, module=FADE)
def fade(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """FADE (Lu et al. ECCV 2022): ``FADE(in_channels, guide_channels, **kwargs)``; the output
    takes the guide's size, so ``scale_factor`` is not used."""
    return FADE(in_channels, guide_channels, **kwargs)
