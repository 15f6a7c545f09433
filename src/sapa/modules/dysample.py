"""DySample: Learning to Upsample by Learning to Sample (Liu et al., ICCV 2023).

Each output point samples the input bilinearly at a learned offset from where bilinear
interpolation would sample it. State-dict names (``offset``, ``scope``, ``init_pos``) follow
the authors' code (github.com/tiny-smart/dysample), and same weights give the same output.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import _checks
from ._inputs import positive_int
from .factory import register_upsampler
from .learned import FixedScaleUpsampler

STYLES = ("lp", "pl")


class DySample(FixedScaleUpsampler):
    """DySample upsampling by an integer factor ``s``, in ``G`` channel groups.

    Offsets are predicted by a 1x1 conv:

    - ``style="lp"`` (linear, then pixel shuffle): on ``x``, to ``2 G s^2`` channels;
    - ``style="pl"`` (pixel shuffle, then linear): on ``pixel_shuffle(x, s)``, to ``2 G``
      channels, then pixel-unshuffled (needs ``s^2 | C``).

    They are scaled by the static scope factor ``0.25`` or, with ``dyscope=True``, by the
    dynamic ``0.5 * sigmoid(scope(.))``, and added to the sub-pixel positions of bilinear
    interpolation. Output point ``(s i + a, s j + b)`` of group ``g`` then samples ``x`` at
    ``(j + dx, i + dy)`` (input pixels; ``grid_sample``, bilinear, ``align_corners=False``,
    border padding), where at initialisation (offsets ~ 0) ``dx = (b - (s - 1) / 2) / s`` and
    ``dy = (a - (s - 1) / 2) / s``: DySample starts as bilinear upsampling.

    ``forward(x, guide=None)``: ``x`` ``B x C x H x W`` -> ``B x C x sH x sW``; a guide is
    ignored but must be ``sH x sW``. ``offsets(x)`` returns the learned part of the offsets.

    Args:
        in_channels: ``C``; ``G`` must divide it.
        scale_factor: ``s`` (default 2).
        style: ``"lp"`` (default) or ``"pl"``.
        groups: ``G`` (default 4).
        dyscope: dynamic scope factor (DySample+ / DySample-S+) instead of the static 0.25.
    """

    def __init__(self, in_channels: int, scale_factor: int = 2, *, style: str = "lp",
                 groups: int = 4, dyscope: bool = False):
        super().__init__(in_channels, scale_factor)
        _checks.check_choice("style", style, STYLES)
        self.groups = positive_int("groups", groups)
        if not isinstance(dyscope, bool):
            raise TypeError(f"dyscope must be a bool, got {type(dyscope).__name__}")
        s = self.scale_factor
        if in_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels}")
        if style == "pl" and in_channels % (s * s):
            raise ValueError(
                f"style='pl' pixel-shuffles x first, so scale_factor**2={s * s} must divide "
                f"in_channels={in_channels}")
        self.style, self.dyscope = style, dyscope
        cin, cout = (in_channels // (s * s), 2 * groups) if style == "pl" else (
            in_channels, 2 * groups * s * s)
        self.offset = nn.Conv2d(cin, cout, 1)
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        if dyscope:
            self.scope = nn.Conv2d(cin, cout, 1, bias=False)
            nn.init.zeros_(self.scope.weight)
        self.register_buffer("init_pos", self._init_pos())

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, style={self.style!r}, groups={self.groups}, "
                f"dyscope={self.dyscope}")

    def _init_pos(self) -> torch.Tensor:
        """``1 x 2*G*s^2 x 1 x 1``: bilinear's sub-pixel offsets, channel
        ``c * G s^2 + g s^2 + a s + b`` holding component ``c`` (0: x, 1: y) of sub-pixel
        ``(a, b)``.

        Evaluated as the authors do, ``arange(-(s - 1) / 2, (s - 1) / 2 + 1) / s`` in the
        default dtype (that of the parameters): the half-integers are exact, so each offset is
        one correctly rounded division. ``(a + 0.5) / s - 0.5`` rounds twice and is one float32
        step off at ``s = 3`` and ``5``.
        """
        s, g = self.scale_factor, self.groups
        sub = torch.arange((1 - s) / 2, (s - 1) / 2 + 1) / s
        dx = sub.view(1, s).expand(s, s)  # varies with b (the column)
        dy = sub.view(s, 1).expand(s, s)  # varies with a (the row)
        return torch.stack([dx, dy]).view(2, 1, s * s).expand(2, g, s * s).reshape(1, -1, 1, 1)

    def _learned_offsets(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 2*G*s^2 x H x W``, in input pixels, without ``init_pos``."""
        s = self.scale_factor
        if self.style == "lp":
            off = self.offset(x)
            return off * (0.5 * torch.sigmoid(self.scope(x))) if self.dyscope else off * 0.25
        xs = F.pixel_shuffle(x, s)
        off = self.offset(xs)
        if self.dyscope:
            return F.pixel_unshuffle(off * torch.sigmoid(self.scope(xs)), s) * 0.5
        return F.pixel_unshuffle(off, s) * 0.25

    @torch.no_grad()
    def offsets(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """The learned offsets per output point, ``B x G x 2 x sH x sW`` (``dx, dy`` in input
        pixels), relative to where bilinear interpolation samples: zero means "bilinear".
        For visualisation."""
        self.check_inputs(x, guide)
        off = F.pixel_shuffle(self._learned_offsets(x), self.scale_factor)
        b, _, h, w = off.shape
        return off.view(b, 2, self.groups, h, w).transpose(1, 2)

    def _sample(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, g = self.scale_factor, self.groups
        # pixel centres (j + 0.5, i + 0.5) in grid_sample's (x, y) order, normalised so that
        # align_corners=False maps them back to pixel j, i
        cx = torch.arange(w, dtype=x.dtype, device=x.device) + 0.5
        cy = torch.arange(h, dtype=x.dtype, device=x.device) + 0.5
        centre = torch.stack([cx.view(1, w).expand(h, w), cy.view(h, 1).expand(h, w)])
        if torch.jit.is_tracing():  # the TorchScript ONNX exporter: keep the size symbolic
            extent = torch._shape_as_tensor(x)[[3, 2]].to(x.dtype)
        else:
            extent = torch.tensor([w, h], dtype=x.dtype, device=x.device)
        extent = extent.view(1, 2, 1, 1, 1)
        pos = offset.view(b, 2, g * s * s, h, w) + centre.view(1, 2, 1, h, w)
        grid = F.pixel_shuffle((2 * pos / extent - 1).view(b, -1, h, w), s)  # B x 2G x sH x sW
        grid = grid.view(b, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1)
        grid = grid.reshape(b * g, s * h, s * w, 2)  # group g of sample n is batch entry n G + g
        out = F.grid_sample(x.reshape(b * g, c // g, h, w), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)
        return out.view(b, c, s * h, s * w)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(x, guide)
        return self._sample(x, self._learned_offsets(x) + self.init_pos.to(x.dtype))


@register_upsampler("dysample", guided=False, module=DySample)
def dysample(in_channels, guide_channels=None, scale_factor=2, **kwargs):
    """``DySample(in_channels, scale_factor, **kwargs)`` (``style``, ``groups``, ``dyscope``);
    ``guide_channels`` is unused."""
    return DySample(in_channels, scale_factor, **kwargs)
