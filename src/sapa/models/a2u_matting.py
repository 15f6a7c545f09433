"""The A2U matting network (Dai, Lu, Shen, CVPR 2021) as FADE and SAPA use it, with every
decoder upsampling stage a named upsampler.

Topology of the authors' release (dongdong93/a2u_matting ``scripts/resnet.py``, and
poppinace/fade ``a2u_matting/resnet.py``, where every downsampling is a 2x2 max-pool, as the
SAPA paper's Appendix C says). Channels at ``width=1``; ``ABN`` is BatchNorm followed by a
leaky ReLU (slope 0.01), the released code's (in-place) activated batch norm::

    input x: 4 x H x W (ImageNet-normalised RGB and trimap / 255)
    l0   = ABN(conv7x7(x))                          64 @ 1       stem
    l0p  = maxpool(l0)                              64 @ 1/2
    l1   = 3 basic blocks(maxpool(l0p))             64 @ 1/4
    l2p, l10 = down-block(l1)                       128 @ 1/8, 128 @ 1/4 (pre-pool feature)
    l2   = 3 basic blocks(l2p)                      128 @ 1/8
    l3p, l20 = down-block(l2)                       256 @ 1/16, 256 @ 1/8
    l3   = 3 basic blocks(l3p)                      256 @ 1/16   (output stride 16)
    lm   = ASPP(l3)                                 256 @ 1/16
    D4: up(lm, guide=l20)  + short3(l2)  -> 2 residual convs -> 128 @ 1/8
    D3: up(.,  guide=l10)  + short2(l1)  -> 2 residual convs ->  64 @ 1/4
    D2: up(.,  guide=l0p)  + short1(l0p) -> 2 residual convs ->  64 @ 1/2
    D1: up(.,  guide=l0)   + short0(x)   -> 2 residual convs ->  32 @ 1
    alpha = conv3x3(.)                              1 @ 1        (raw: clip at inference)

A down-block is the release's ``ResidualBlockWithEnFeature``: ``conv3x3 -> ABN`` (the
pre-pool feature, returned as the guide of the decoder stage at that resolution), max-pool,
``conv3x3 -> BN``, plus a strided ``1x1`` projection of the input, then the leaky ReLU. The
ResNet-34 block structure is ``[3, 4, 4, 2]``: 3 blocks at 1/4, 1 + 3 at 1/8, 1 + 3 at 1/16;
the release builds no fourth stage (output stride 16), so the last entry is unused.

Every upsampler is built as ``build_upsampler(name, C, C, scale_factor=2)``: the decoder
feature and its guide have the same channels at every stage, so SAPA-I applies. IndexNet and
A2U predict their index maps / kernels from the guide, the pre-pooling encoder feature, as in
their matting networks; the encoder itself pools with max-pool for every upsampler (SAPA App.
C), so their paired index/affinity *down*sampling is not used.

Differences from the release, for training from scratch on a CPU: a ``width`` multiplier on
every channel count; no ImageNet-pretrained encoder, so its BatchNorms are not frozen; the
network's own convolutions get the release's Xavier-normal init (leaky-ReLU gain) but the
upsamplers keep their own (the release re-initialises every convolution of the model,
upsamplers included); and the prediction layer is one ``3x3`` convolution with a bias instead
of the release's ``conv3x3 -> ABN(1) -> conv3x3`` (``head="release"`` keeps that one).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules import build_upsampler

STRIDE = 16
LEAKY_SLOPE = 0.01
STRUCTURE = (3, 4, 4, 2)
HEADS = ("conv", "release")


def abn(channels: int, activation: bool = True) -> nn.Sequential:
    """BatchNorm, then a leaky ReLU (slope 0.01) unless ``activation=False``."""
    layers = [nn.BatchNorm2d(channels)]
    if activation:
        layers.append(nn.LeakyReLU(LEAKY_SLOPE))
    return nn.Sequential(*layers)


def conv_abn(cin: int, cout: int, kernel_size: int = 3, activation: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
                         *abn(cout, activation))


class BasicBlock(nn.Module):
    """``LReLU(BN(conv(ABN(conv(x)))) + proj(x))``, ``proj`` a ``1x1`` conv + BN when the
    channels change (the release's ``ResidualBlock``, used in the encoder and, as
    ``residual_conv``, twice per decoder stage)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3):
        super().__init__()
        self.convs = nn.Sequential(conv_abn(cin, cout, kernel_size),
                                   conv_abn(cout, cout, kernel_size, activation=False))
        self.proj = conv_abn(cin, cout, 1, activation=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.convs(x) + self.proj(x), LEAKY_SLOPE)


class DownBlock(nn.Module):
    """The first block of a stage that halves the resolution: returns ``(out, pre_pool)``,
    ``out`` ``cout @ 1/2`` and ``pre_pool`` (``ABN(conv3x3(x))``, ``cout`` at the input's
    resolution) the guide of the decoder stage that upsamples back to it."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = conv_abn(cin, cout)
        self.conv2 = conv_abn(cout, cout, activation=False)
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False),
                                  *abn(cout, activation=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre_pool = self.conv1(x)
        out = self.conv2(F.max_pool2d(pre_pool, 2))
        return F.leaky_relu(out + self.proj(x), LEAKY_SLOPE), pre_pool


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of the release (``hlaspp.py``, output stride 16): a
    ``1x1`` branch, three depthwise-separable ``3x3`` branches with dilations 6, 12, 18, and
    image pooling, each to ``mid`` channels with ABN; concatenated, ``1x1`` to ``cout`` with
    ABN, dropout 0.5."""

    def __init__(self, cin: int, cout: int, mid: int, dilations=(6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([conv_abn(cin, mid, 1)])
        for d in dilations:
            self.branches.append(nn.Sequential(
                nn.Conv2d(cin, cin, 3, padding=d, dilation=d, groups=cin, bias=False),
                *abn(cin), conv_abn(cin, mid, 1)))
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_abn(cin, mid, 1))
        self.project = conv_abn(mid * (len(dilations) + 2), cout, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches]
        feats.append(F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="nearest"))
        return self.dropout(self.project(torch.cat(feats, 1)))


class DecoderStage(nn.Module):
    """``two residual convs(up(x, guide) + skip)``: ``cin @ s`` -> ``cout @ 2s``."""

    def __init__(self, cin: int, cout: int, up: nn.Module):
        super().__init__()
        self.up = up
        self.convs = nn.Sequential(BasicBlock(cin, cout), BasicBlock(cout, cout))

    def forward(self, x: torch.Tensor, guide: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(self.up(x, guide) + skip)


def _channels(width: float):
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return lambda c: max(1, int(round(c * width)))


class A2UMatting(nn.Module):
    """The A2U matting network with swappable decoder upsamplers.

    ``forward(x)``: ``x`` ``B x 4 x H x W`` (ImageNet-normalised RGB, then trimap / 255), ``H``
    and ``W`` multiples of 16; returns the raw alpha ``B x 1 x H x W`` (not clipped: the
    training loss sees it as is, inference clips it to [0, 1]).

    Args:
        upsampler: a name from ``sapa.list_upsamplers()`` for the four decoder stages D4..D1.
        width: multiplier of every channel count (1: the release's 64/128/256 encoder, ASPP
            256, decoder 128/64/64/32).
        upsampler_kwargs: extra options for every upsampler.
        head: the prediction layer: ``"conv"`` (default), a ``3x3`` convolution with a bias, or
            ``"release"``, the release's ``conv3x3 -> ABN(1 channel) -> conv3x3`` (no bias),
            whose one-channel BatchNorm and leaky ReLU stall training from scratch for most
            seeds (the output settles on a constant; see docs/matting.md).
    """

    def __init__(self, upsampler: str = "bilinear", width: float = 1.0,
                 upsampler_kwargs: dict | None = None, head: str = "conv"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
        c = _channels(width)
        self.upsampler_name, self.width = upsampler, width
        c64, c128, c256, c32 = c(64), c(128), c(256), c(32)
        n1, n2, n3, _ = STRUCTURE

        self.layer0 = conv_abn(4, c64, 7)
        self.layer1 = nn.Sequential(*[BasicBlock(c64, c64) for _ in range(n1)])
        self.layer2_1 = DownBlock(c64, c128)
        self.layer2_2 = nn.Sequential(*[BasicBlock(c128, c128) for _ in range(n2 - 1)])
        self.layer3_1 = DownBlock(c128, c256)
        self.layer3_2 = nn.Sequential(*[BasicBlock(c256, c256) for _ in range(n3 - 1)])
        self.aspp = ASPP(c256, c256, mid=c256)

        # decoder stage: (decoder channels in, out); the guide has the decoder's input channels
        stages = {"d4": (c256, c128), "d3": (c128, c64), "d2": (c64, c64), "d1": (c64, c32)}
        self.short3 = conv_abn(c128, c256)
        self.short2 = conv_abn(c64, c128)
        self.short1 = conv_abn(c64, c64)
        self.short0 = conv_abn(4, c64)
        self._init_weights()  # before the upsamplers: they keep their own initialisation
        for name, (cin, cout) in stages.items():
            up = build_upsampler(upsampler, cin, cin, scale_factor=2, **(upsampler_kwargs or {}))
            self.add_module(name, DecoderStage(cin, cout, up))
            self._init_weights(getattr(self, name).convs)
        if head == "release":
            self.pred = nn.Sequential(conv_abn(c32, 1), nn.Conv2d(1, 1, 3, padding=1, bias=False))
        else:
            self.pred = nn.Conv2d(c32, 1, 3, padding=1)
        self._init_weights(self.pred)

    def _init_weights(self, root: nn.Module | None = None) -> None:
        """The release's init: Xavier-normal convolutions with the leaky-ReLU gain, BN 1 / 0."""
        gain = nn.init.calculate_gain("leaky_relu", LEAKY_SLOPE)
        for m in (root or self).modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight, gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stride(self) -> int:
        """Input sizes must be multiples of this (the output stride)."""
        return STRIDE

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a B x 4 x H x W tensor (normalised RGB and trimap / 255), "
                             f"got {got}")
        h, w = x.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"x height and width must be multiples of {STRIDE} (the output "
                             f"stride; pad as sapa.tasks.matting.predict_alpha does), got {h}x{w}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        l0 = self.layer0(x)
        l0p = F.max_pool2d(l0, 2)
        l1 = self.layer1(F.max_pool2d(l0p, 2))
        l2p, l10 = self.layer2_1(l1)
        l2 = self.layer2_2(l2p)
        l3p, l20 = self.layer3_1(l2)
        lm = self.aspp(self.layer3_2(l3p))

        d = self.d4(lm, l20, self.short3(l2))
        d = self.d3(d, l10, self.short2(l1))
        d = self.d2(d, l0p, self.short1(l0p))
        d = self.d1(d, l0, self.short0(x))
        return self.pred(d)

    def upsamplers(self) -> list[nn.Module]:
        """The upsamplers of D4, D3, D2, D1 (coarse to fine)."""
        return [self.d4.up, self.d3.up, self.d2.up, self.d1.up]

    def last_upsampler(self) -> nn.Module:
        """The upsampler of the last (full-resolution) decoder stage D1."""
        return self.d1.up
