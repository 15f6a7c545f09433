"""BTS (Lee et al., "From Big to Small: Multi-Scale Local Planar Guidance for Monocular Depth
Estimation", 2019) with its decoder's upsampling swapped for a named upsampler, as the SAPA
paper does for its depth experiment (Table 4).

The network follows the authors' PyTorch code (cleinc/bts ``pytorch/bts.py``) layer for layer:

- **Encoder**: a torchvision ResNet; the skips are the stem's ReLU output (1/2), ``layer1``
  (1/4), ``layer2`` (1/8), ``layer3`` (1/16) and ``layer4`` (1/32).
- **Decoder** (``F = bts_size``): ``upconv5`` (ReLU(layer4) -> F, 1/16), concat ``layer3``,
  ``conv5``; ``upconv4`` (-> F/2, 1/8), concat ``layer2``, ``conv4``, dense ASPP (dilations 3,
  6, 12, 18, 24) -> ``daspp_feat`` (F/4) -> plane coefficients -> LPG x8; ``upconv3`` (-> F/4,
  1/4), concat ``layer1`` and the x8 depth at 1/4, ``conv3`` -> LPG x4; ``upconv2`` (-> F/8,
  1/2), concat the stem and the x4 depth at 1/2, ``conv2`` -> LPG x2; ``upconv1`` (-> F/16,
  1/1), concat a 1x1 reduction and the three LPG depths, ``conv1``, ``max_depth * sigmoid``.
- **The swap** (SAPA paper, App. C and Table 4; reconstructed from its parameter counts in
  ``reference/paper-tasks.md`` §3a): BTS's ``upconv`` is ``ELU(conv3x3(nearest_x2(x)))``; in
  ``upconv5`` .. ``upconv2`` the nearest step becomes ``up(x, guide)``, the named upsampler
  applied to the stage's *input* ``x`` (ReLU(layer4), ``iconv5``, ``daspp_feat``, ``iconv3``)
  and guided by the encoder skip at the target resolution (``layer3``, ``layer2``,
  ``layer1``, the stem's ReLU output). ``upconv1`` has no higher-resolution guide and stays
  nearest, as the paper does ("all upsampling stages but the last one").

Differences from BTS, all deliberate:

- **Local planar guidance** is kept as BTS's PyTorch code computes it (plane coefficients from
  a 1x1 reduction, ``depth = n4 / (n1 u + n2 v + n3)`` on each ``r x r`` block, without the
  focal length, which BTS's PyTorch LPG does not use either). One change: BTS's reduction
  stacks are empty when ``bts_size < 128`` (their loop starts below 4 channels and the
  ``conv1`` input no longer matches); here such a stack is only its final 1x1 convolution,
  so narrow decoders work. For ``bts_size >= 128`` the stacks are BTS's.
- **Batch norm** in the decoder uses PyTorch's default momentum (0.1) instead of BTS's 0.01:
  BTS trains ~300k steps, this runs for hundreds, and running statistics with momentum 0.01
  would still be far from the data after that. BTS's trick of running the encoder's batch
  norms in eval mode (``bn_init_as_tf``) is not used: from random weights they must train.
- The decoder's convolutions are Xavier-initialised, as BTS does (``weights_init_xavier``).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from ..modules import build_upsampler

# torchvision ResNets BTS offers, and the channels of (relu, layer1, layer2, layer3, layer4)
ENCODER_CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "resnet101": (64, 256, 512, 1024, 2048),
}
ENCODERS = tuple(ENCODER_CHANNELS)
# --encoder-weights value: torchvision's default weights, from its download cache only
TORCHVISION_CACHE = "torchvision"
STRIDE = 32
# BTS's decoder batch norms: eps 1.1e-5 (their momentum 0.01 is not kept: see the docstring)
_BN_EPS = 1.1e-5


def _torchvision():
    try:
        import torchvision
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise UsageError(f"the BTS depth model needs torchvision, which cannot be imported "
                          f"here ({exc}); pip install 'sapa[experiments]' with a torchvision "
                          f"built for your torch") from exc
    return torchvision


def cached_torchvision_weights(name: str) -> str:
    """Path of torchvision's default weights for ``name`` in the torch hub cache
    (``torch.hub.get_dir()/checkpoints``); ``ValueError`` if they are not there (nothing is
    downloaded)."""
    tv = _torchvision()
    url = tv.models.get_model_weights(name).DEFAULT.url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    if not os.path.isfile(path):
        raise UsageError(f"--encoder-weights {TORCHVISION_CACHE}: torchvision's {name} weights "
                         f"are not in the cache ({path}); download them there (or pass the "
                         f"file's path), nothing is downloaded here")
    return path


def load_encoder_state(path: str) -> dict:
    """A ResNet state dict from ``path``: a plain state dict, or a checkpoint holding one under
    ``"state_dict"`` or ``"model"``; ``fc.*`` entries are dropped."""
    if not os.path.isfile(path):
        raise UsageError(f"--encoder-weights: no such file {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"--encoder-weights: cannot read {path} as a torch state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"--encoder-weights: {path} holds a {type(state).__name__}, not a state dict")
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its head; ``forward(x)`` returns BTS's five skips
    ``[relu (1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16), layer4 (1/32)]``.

    Args:
        name: one of ``ENCODERS``.
        weights: ``None`` (random init, nothing downloaded), ``"torchvision"`` (torchvision's
            default ImageNet weights, from its cache only) or the path of a state dict.
    """

    def __init__(self, name: str = "resnet18", weights: str | None = None):
        super().__init__()
        if name not in ENCODER_CHANNELS:
            raise ValueError(f"encoder must be one of {list(ENCODERS)}, got {name!r}")
        net = getattr(_torchvision().models, name)(weights=None)
        if weights is not None:
            path = cached_torchvision_weights(name) if weights == TORCHVISION_CACHE else weights
            state = load_encoder_state(path)
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise UsageError(f"--encoder-weights: {path} does not fit torchvision's {name}: "
                                 f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.name, self.channels = name, ENCODER_CHANNELS[name]
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s0 = self.relu(self.bn1(self.conv1(x)))
        s1 = self.layer1(self.maxpool(s0))
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        return [s0, s1, s2, s3, self.layer4(s3)]


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS)


def _conv_elu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.ELU())


class UpConv(nn.Module):
    """BTS's ``upconv`` with the upsampling swapped: ``ELU(conv3x3(up(x, guide)))``.

    ``up`` is ``build_upsampler(upsampler, cin, guide_channels)``; the output has the guide's
    size (or twice ``x``'s without a guide)."""

    def __init__(self, upsampler: str, cin: int, cout: int, guide_channels: int | None,
                 upsampler_kwargs: dict | None = None):
        super().__init__()
        self.up = build_upsampler(upsampler, cin, guide_channels, scale_factor=2,
                                  **(upsampler_kwargs or {}))
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.elu = nn.ELU()

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        return self.elu(self.conv(self.up(x, guide)))


class AtrousConv(nn.Sequential):
    """BTS's ``atrous_conv``: [BN] -> ReLU -> 1x1 (2 cout) -> BN -> ReLU -> 3x3 dilated (cout)."""

    def __init__(self, cin: int, cout: int, dilation: int, bn_first: bool = True):
        layers = [_bn(cin)] if bn_first else []
        layers += [nn.ReLU(), nn.Conv2d(cin, 2 * cout, 1, bias=False), _bn(2 * cout), nn.ReLU(),
                   nn.Conv2d(2 * cout, cout, 3, padding=dilation, dilation=dilation, bias=False)]
        super().__init__(*layers)


class Reduction(nn.Module):
    """BTS's ``reduction_1x1``: 1x1 conv + ELU stages halving from ``cout`` while at least 8
    channels, then either one sigmoid channel (``final``) or plane coefficients
    ``(n1, n2, n3, n4)``: the unit normal from angles ``theta = sigmoid * pi / 3``,
    ``phi = sigmoid * 2 pi`` and the distance ``sigmoid * max_depth``.

    When ``cout < 4`` (BTS would build no layer at all) it is the final 1x1 conv alone."""

    def __init__(self, cin: int, cout: int, max_depth: float, final: bool = False):
        super().__init__()
        self.max_depth, self.final = max_depth, final
        layers = []
        while cout >= 8:
            layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.ELU()]
            cin, cout = cout, cout // 2
        layers.append(nn.Conv2d(cin, 1 if final else 3, 1, bias=False))
        self.reduc = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.reduc(x)
        if self.final:
            return torch.sigmoid(net)
        theta = torch.sigmoid(net[:, 0]) * math.pi / 3
        phi = torch.sigmoid(net[:, 1]) * math.pi * 2
        dist = torch.sigmoid(net[:, 2]) * self.max_depth
        normal = torch.stack([torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi),
                              torch.cos(theta)], dim=1)
        return torch.cat([F.normalize(normal, 2, 1), dist[:, None]], dim=1)


def local_planar_guidance(plane: torch.Tensor, ratio: int) -> torch.Tensor:
    """BTS's LPG: ``B x 4 x h x w`` plane coefficients -> ``B x 1 x rh x rw`` depth, each
    ``r x r`` block ``n4 / (n1 u + n2 v + n3)`` with ``u`` (column) and ``v`` (row) the
    block-centred offsets ``(i - (r - 1) / 2) / r``."""
    eq = plane.repeat_interleave(ratio, 2).repeat_interleave(ratio, 3)
    offs = (torch.arange(ratio, device=plane.device, dtype=plane.dtype) - (ratio - 1) / 2) / ratio
    h, w = plane.shape[2], plane.shape[3]
    u = offs.repeat(w)[None, None, :]  # along columns
    v = offs.repeat(h)[None, :, None]  # along rows
    return (eq[:, 3] / (eq[:, 0] * u + eq[:, 1] * v + eq[:, 2]))[:, None]


def _check_bts_size(bts_size) -> int:
    if isinstance(bts_size, bool) or not isinstance(bts_size, int) or bts_size < 32 or bts_size % 16:
        raise ValueError(f"bts_size must be a multiple of 16, at least 32, got {bts_size!r}")
    return bts_size


class BTS(nn.Module):
    """BTS depth network whose ``upconv5`` .. ``upconv2`` upsample with ``upsampler``.

    ``forward(image)``: ``B x 3 x H x W`` (``H``, ``W`` multiples of 32), ImageNet-normalised;
    returns depth ``B x 1 x H x W`` in ``(0, max_depth)`` metres.

    Args:
        upsampler: a name from ``sapa.list_upsamplers()`` (``"nearest"`` is BTS itself).
        encoder: one of ``ENCODERS`` (BTS's paper setting for SAPA: ``resnet50``).
        bts_size: ``F``, the decoder width (BTS: 512); a multiple of 16, at least 32.
        max_depth: metres (NYU: 10).
        encoder_weights: ``None``, ``"torchvision"`` or a state-dict path (``ResNetEncoder``).
        upsampler_kwargs: extra options for the four swapped upsamplers.
    """

    def __init__(self, upsampler: str = "nearest", encoder: str = "resnet18", bts_size: int = 512,
                 max_depth: float = 10.0, encoder_weights: str | None = None,
                 upsampler_kwargs: dict | None = None):
        super().__init__()
        f = _check_bts_size(bts_size)
        if isinstance(max_depth, bool) or not isinstance(max_depth, (int, float)) \
                or not math.isfinite(max_depth) or max_depth <= 0:
            raise ValueError(f"max_depth must be a finite number > 0, got {max_depth!r}")
        self.upsampler_name, self.bts_size, self.max_depth = upsampler, f, float(max_depth)
        self.encoder = ResNetEncoder(encoder, encoder_weights)
        c0, c1, c2, c3, c4 = self.encoder.channels
        kw = upsampler_kwargs

        self.upconv5 = UpConv(upsampler, c4, f, c3, kw)
        self.bn5 = _bn(f)
        self.conv5 = _conv_elu(f + c3, f)
        self.upconv4 = UpConv(upsampler, f, f // 2, c2, kw)
        self.bn4 = _bn(f // 2)
        self.conv4 = _conv_elu(f // 2 + c2, f // 2)
        self.bn4_2 = _bn(f // 2)
        self.daspp_3 = AtrousConv(f // 2, f // 4, 3, bn_first=False)
        self.daspp_6 = AtrousConv(f // 2 + f // 4 + c2, f // 4, 6)
        self.daspp_12 = AtrousConv(f + c2, f // 4, 12)
        self.daspp_18 = AtrousConv(f + f // 4 + c2, f // 4, 18)
        self.daspp_24 = AtrousConv(f + f // 2 + c2, f // 4, 24)
        self.daspp_conv = _conv_elu(f + f // 2 + f // 4, f // 4)
        self.reduc8x8 = Reduction(f // 4, f // 4, self.max_depth)
        self.upconv3 = UpConv(upsampler, f // 4, f // 4, c1, kw)
        self.bn3 = _bn(f // 4)
        self.conv3 = _conv_elu(f // 4 + c1 + 1, f // 4)
        self.reduc4x4 = Reduction(f // 4, f // 8, self.max_depth)
        self.upconv2 = UpConv(upsampler, f // 4, f // 8, c0, kw)
        self.bn2 = _bn(f // 8)
        self.conv2 = _conv_elu(f // 8 + c0 + 1, f // 8)
        self.reduc2x2 = Reduction(f // 8, f // 16, self.max_depth)
        self.upconv1 = UpConv("nearest", f // 8, f // 16, None)  # no guide above 1/2: as the paper
        self.reduc1x1 = Reduction(f // 16, f // 32, self.max_depth, final=True)
        self.conv1 = _conv_elu(f // 16 + 4, f // 16)
        self.get_depth = nn.Conv2d(f // 16, 1, 3, padding=1, bias=False)
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("encoder") and ".up." not in f".{name}":
                nn.init.xavier_uniform_(m.weight)

    @property
    def stride(self) -> int:
        """Input sizes must be multiples of this."""
        return STRIDE

    def check_input(self, image: torch.Tensor) -> None:
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be a B x 3 x H x W tensor, got {shape}")
        h, w = image.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"image height and width must be multiples of {STRIDE}, got {h}x{w}")

    def upsamplers(self) -> list[nn.Module]:
        """The four swapped upsamplers, coarse to fine (``upconv5`` .. ``upconv2``)."""
        return [self.upconv5.up, self.upconv4.up, self.upconv3.up, self.upconv2.up]

    def last_upsampler(self) -> nn.Module:
        """The upsampler of the finest guided stage (``upconv2``)."""
        return self.upconv2.up

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.check_input(image)
        skip0, skip1, skip2, skip3, feat = self.encoder(image)
        md = self.max_depth

        iconv5 = self.conv5(torch.cat([self.bn5(self.upconv5(F.relu(feat), skip3)), skip3], 1))
        concat4 = torch.cat([self.bn4(self.upconv4(iconv5, skip2)), skip2], 1)
        iconv4 = self.bn4_2(self.conv4(concat4))

        daspp_3 = self.daspp_3(iconv4)
        concat4_2 = torch.cat([concat4, daspp_3], 1)
        daspp_6 = self.daspp_6(concat4_2)
        concat4_3 = torch.cat([concat4_2, daspp_6], 1)
        daspp_12 = self.daspp_12(concat4_3)
        concat4_4 = torch.cat([concat4_3, daspp_12], 1)
        daspp_18 = self.daspp_18(concat4_4)
        daspp_24 = self.daspp_24(torch.cat([concat4_4, daspp_18], 1))
        daspp_feat = self.daspp_conv(
            torch.cat([iconv4, daspp_3, daspp_6, daspp_12, daspp_18, daspp_24], 1))

        depth_8x8 = local_planar_guidance(self.reduc8x8(daspp_feat), 8) / md
        upconv3 = self.bn3(self.upconv3(daspp_feat, skip1))
        iconv3 = self.conv3(torch.cat([upconv3, skip1, F.interpolate(depth_8x8, scale_factor=0.25,
                                                                      mode="nearest")], 1))
        depth_4x4 = local_planar_guidance(self.reduc4x4(iconv3), 4) / md
        upconv2 = self.bn2(self.upconv2(iconv3, skip0))
        iconv2 = self.conv2(torch.cat([upconv2, skip0, F.interpolate(depth_4x4, scale_factor=0.5,
                                                                      mode="nearest")], 1))
        depth_2x2 = local_planar_guidance(self.reduc2x2(iconv2), 2) / md
        upconv1 = self.upconv1(iconv2)
        iconv1 = self.conv1(torch.cat([upconv1, self.reduc1x1(upconv1), depth_2x2, depth_4x4,
                                       depth_8x8], 1))
        return md * torch.sigmoid(self.get_depth(iconv1))
