"""The SAPA upsampler module and its variants I / B / P / G (paper §4.2, Table 1, Table 6)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import _checks, _normalizers
from ..ops._geometry import nearest_upsample
from ..ops.functional import local_similarity, sapa_attention
from ._inputs import check_backend, check_guided, positive_int
from .factory import register_upsampler
from .norms import NORMS, build_norm, project_normalized
from .pointwise import Pointwise

VARIANTS = ("I", "B", "P", "G")
DECODER_QUERY = ("table1", "official")


def _proj(cin: int, cout: int, bias: bool) -> Pointwise:
    conv = Pointwise(cin, cout, bias=bias)
    nn.init.trunc_normal_(conv.weight, std=0.02)  # as the official release
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class SAPA(nn.Module):
    """Similarity-Aware Point Affiliation upsampling.

    ``forward(x, guide)``: ``x`` the decoder feature ``B x C x H x W``, ``guide`` the encoder
    feature ``B x Cg x H' x W'`` (any ``H' >= H, W' >= W``); returns ``B x C' x H' x W'`` with
    ``C' = out_channels or C``.

    Variants (``LN`` the channel norm chosen by ``norm``; ``P*`` 1x1 projections to ``d``;
    ``NN`` nearest upsampling to the guide's size):

    - ``"I"``: ``q = LN(guide)``, ``k = LN(x)``; no parameters but the norms; needs ``Cg == C``.
    - ``"B"``: ``q = Pq LN(guide)``, ``k = Pk LN(x)``; ``2Cd`` weights (Table 1).
    - ``"P"``: ``q = Pq LN(guide) + Pqx NN(LN(x))`` (Table 6's plain addition).
    - ``"G"``: ``q = g Pq LN(guide) + (1 - g) Pqx NN(LN(x))``, ``g = NN(sigmoid(Pg LN(x)))``;
      ``2Cd + C`` weights (Table 1).

    ``decoder_query`` picks ``Pqx`` for P and G: ``"table1"`` (default) reuses the key
    projection on the normalised decoder feature, ``Pqx NN(LN(x)) = NN(k)``, which is what
    Table 1 counts and what the paper's text describes; ``"official"`` is the authors' release:
    a separate ``Pqx`` (``3Cd + C`` weights) applied to the *un-normalised* ``x``.

    The values are the raw ``x``; with ``value_proj=True`` or ``out_channels != C`` they are
    ``Pv LN(x)`` (as the release does).

    Args:
        in_channels: ``C``, channels of ``x``.
        guide_channels: ``Cg``, channels of the guide (default ``C``).
        variant: one of ``"I"``, ``"B"``, ``"P"``, ``"G"``.
        kernel_size: ``K``, odd (paper default 5).
        embed_dim: ``d`` (paper default 32); unused by ``"I"``, where ``d = C``.
        normalizer, border: as ``sapa.sapa_attention``.
        norm: ``"layer"`` (paper), ``"group"`` (the extension) or ``"none"``.
        out_channels: ``C'``; adds the value projection when it differs from ``C``.
        value_proj: project the values even when ``out_channels == C``.
        decoder_query: ``"table1"`` or ``"official"`` (P and G only).
        bias: biases on the projections (the release uses them).
        backend: forwarded to ``sapa_attention`` (``None``: automatic).
    """

    def __init__(
        self,
        in_channels: int,
        guide_channels: int | None = None,
        *,
        variant: str = "B",
        kernel_size: int = 5,
        embed_dim: int = 32,
        normalizer: str = "softmax",
        border: str = "zeros",
        norm: str = "layer",
        out_channels: int | None = None,
        value_proj: bool = False,
        decoder_query: str = "table1",
        bias: bool = True,
        backend: str | None = None,
    ):
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("embed_dim", embed_dim)
        guide_channels = in_channels if guide_channels is None else guide_channels
        out_channels = in_channels if out_channels is None else out_channels
        positive_int("guide_channels", guide_channels)
        positive_int("out_channels", out_channels)
        _checks.check_choice("variant", variant, VARIANTS)
        _checks.check_kernel_size(kernel_size)
        _checks.check_choice("normalizer", normalizer, _checks.NORMALIZERS)
        _checks.check_choice("border", border, _checks.BORDERS)
        _checks.check_choice("norm", norm, NORMS)
        _checks.check_choice("decoder_query", decoder_query, DECODER_QUERY)
        check_backend(backend)
        if variant == "I" and guide_channels != in_channels:
            raise ValueError(
                "variant 'I' compares LN(guide) with LN(x) directly and needs "
                f"guide_channels == in_channels, got {guide_channels} and {in_channels}; "
                "use variant 'B' to project both to embed_dim"
            )

        self.in_channels, self.guide_channels, self.out_channels = (
            in_channels, guide_channels, out_channels)
        self.variant, self.kernel_size, self.embed_dim = variant, kernel_size, embed_dim
        self.normalizer, self.border, self.backend = normalizer, border, backend
        self.decoder_query = decoder_query

        self.norm_guide = build_norm(norm, guide_channels)
        self.norm_x = build_norm(norm, in_channels)
        if variant != "I":
            self.q = _proj(guide_channels, embed_dim, bias)
            self.k = _proj(in_channels, embed_dim, bias)
            if variant in ("P", "G") and decoder_query == "official":
                self.q_x = _proj(in_channels, embed_dim, bias)
            if variant == "G":
                self.gate = _proj(in_channels, 1, bias)
        if value_proj or out_channels != in_channels:
            self.v = _proj(in_channels, out_channels, bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, guide_channels={self.guide_channels}, variant={self.variant!r}, "
                f"kernel_size={self.kernel_size}, embed_dim={self.embed_dim}, "
                f"normalizer={self.normalizer!r}, border={self.border!r}, "
                f"out_channels={self.out_channels}")

    def _check_inputs(self, x, guide):
        check_guided("SAPA", x, guide, self.in_channels, self.guide_channels)

    def query_key(self, x: torch.Tensor, guide: torch.Tensor):
        """``(q, k)``: ``B x d x H' x W'`` and ``B x d x H x W`` (``d = C`` for variant I)."""
        if self.variant == "I":
            return self.norm_guide(guide), self.norm_x(x)
        # the projections of the normalised maps, without keeping the C-channel maps alive
        (q,) = project_normalized(guide, self.norm_guide, [self.q])
        if self.variant == "G":
            k, gate = project_normalized(x, self.norm_x, [self.k, self.gate])
        else:
            (k,) = project_normalized(x, self.norm_x, [self.k])
        if self.variant == "B":
            return q, k
        size = guide.shape[-2:]
        # 1x1 projections commute with nearest upsampling: project at low resolution.
        q_x = self.q_x(x) if self.decoder_query == "official" else k
        q_x = nearest_upsample(q_x, size)
        if self.variant == "P":
            return q + q_x, k
        g = nearest_upsample(torch.sigmoid(gate), size)
        return g * q + (1 - g) * q_x, k

    @torch.no_grad()
    def kernels(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The upsampling kernels ``B x K*K x H' x W'`` (for visualisation; index order as
        ``sapa.local_similarity``). Every dynamic upsampler in the zoo offers this method."""
        self._check_inputs(x, guide)
        q, k = self.query_key(x, guide)
        scores = local_similarity(q, k, self.kernel_size, border=self.border, backend=self.backend)
        return _normalizers.kernels_from_scores(scores, self.normalizer, self.border)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, guide)
        q, k = self.query_key(x, guide)
        v = project_normalized(x, self.norm_x, [self.v])[0] if hasattr(self, "v") else x
        return sapa_attention(q, k, v, self.kernel_size, normalizer=self.normalizer,
                              border=self.border, backend=self.backend)


def _sapa_builder(variant):
    def build(in_channels, guide_channels=None, scale_factor=2, **kwargs):
        return SAPA(in_channels, guide_channels, variant=variant, **kwargs)

    build.__doc__ = (f"SAPA-{variant}: ``SAPA(in_channels, guide_channels, variant={variant!r}, "
                     "**kwargs)``; the output takes the guide's size, so ``scale_factor`` is not "
                     "used.")
    return build


for _v in VARIANTS:
    register_upsampler(f"sapa-{_v.lower()}", guided=True, module=SAPA,
                       fixed=("variant",))(_sapa_builder(_v))
