"""SegFormer (Xie et al., NeurIPS 2021) with swappable upsampling: the model of SAPA's Table 2
and of its whole ablation (Table 6).

Encoder: the Mix Transformer (MiT-B0 ... B5), taken from Hugging Face ``transformers``
(``SegformerModel``), randomly initialised, or loaded from a local path (see ``mit_encoder``).
It returns four feature maps at strides 4, 8, 16 and 32 (``c1 .. c4``).

Decoder: the all-MLP head. Each ``c_i`` is projected to ``embed_dim`` channels by a per-pixel
linear layer; the three coarser ones are brought to 1/4 resolution; the four are concatenated
(``[c4, c3, c2, c1]``), fused by a 1x1 conv + BatchNorm + ReLU, and after ``Dropout2d(0.1)`` a
1x1 classifier gives logits at 1/4 of the input, which are resized bilinearly
(``align_corners=False``) to the label size.

The upsampling to 1/4, which SegFormer does with one bilinear resize per scale, is where the
upsampler under test goes:

- ``nearest`` / ``bilinear`` (parameter-free interpolation to any size): one resize per scale,
  exactly as SegFormer (three modules, each called as ``up(c_i, guide=c1)``; the guide only
  gives the size);
- every other upsampler: six x2 modules, in the order of the SAPA / FADE releases (FADE's
  ``segformer_head.py``; ``SegformerHead_Upsample`` of tiny-smart/segmentation-with-upsamplers),
  each guided by the *projected* feature of the next finer scale::

      c4 = up0(c4, c3); c4 = up1(c4, c2); c4 = up2(c4, c1)
      c3 = up3(c3, c2); c3 = up4(c3, c1)
      c2 = up5(c2, c1)

  Guide-free learned upsamplers (CARAFE, deconv, pixel shuffle, DySample) get the same six
  chained x2 stages and ignore the guide, as those releases do (their parameter counts in
  SAPA's Table 2 are six modules' worth).

State-dict names follow ``transformers.SegformerForSemanticSegmentation`` (``segformer.*`` the
encoder; ``decode_head.linear_projections.<i>.proj``, ``linear_fuse``, ``batch_norm``,
``classifier``), so a Hugging Face SegFormer checkpoint loads into ``SegFormer`` (the
upsamplers' weights, if any, are new) and ``sapa.integrations.transformers`` can put this head
into a Hugging Face model.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from ..modules import build_upsampler
from ..modules.interpolation import BilinearUpsample, NearestUpsample
from ._blocks import check_num_classes, check_positive_ints

TRANSFORMERS_HINT = "pip install 'sapa[segformer]' (Hugging Face transformers)"

# (scale upsampled, scale of its guide) of the six x2 stages, in the order of the releases;
# scale 0 is c1 (1/4), 3 is c4 (1/32)
GUIDED_STAGES = ((3, 2), (3, 1), (3, 0), (2, 1), (2, 0), (1, 0))


@dataclass(frozen=True)
class MiTSize:
    """One Mix Transformer size (SegFormer paper, Table 6 / the released configs)."""

    hidden_sizes: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    decoder_dim: int  # the all-MLP head's embedding width
    num_attention_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)


MIT_SIZES = {
    "b0": MiTSize((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": MiTSize((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": MiTSize((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": MiTSize((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": MiTSize((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": MiTSize((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


def _transformers():
    try:
        import transformers
    except Exception as exc:  # ImportError, or a broken install failing on import
        raise ImportError(f"SegFormer's MiT encoder needs transformers, which cannot be imported "
                          f"here ({exc}); {TRANSFORMERS_HINT}") from exc
    return transformers


def _check_size(size) -> MiTSize:
    if size not in MIT_SIZES:
        raise ValueError(f"size must be one of {list(MIT_SIZES)}, got {size!r}")
    return MIT_SIZES[size]


def mit_config(size: str = "b1", **overrides):
    """``transformers.SegformerConfig`` of MiT-``size`` (``"b0"`` ... ``"b5"``); ``overrides``
    are further ``SegformerConfig`` fields. Attention is ``"eager"`` unless overridden: its
    matrix products are then visible to ``torch.utils.flop_counter`` (SDPA's CPU kernel is
    not counted), and on the CPU it is no slower at these sizes."""
    s = _check_size(size)
    kwargs = dict(hidden_sizes=list(s.hidden_sizes), depths=list(s.depths),
                  num_attention_heads=list(s.num_attention_heads), sr_ratios=list(s.sr_ratios),
                  decoder_hidden_size=s.decoder_dim, attn_implementation="eager")
    kwargs.update(overrides)
    return _transformers().SegformerConfig(**kwargs)


def _state_dict_file(path: str) -> dict:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a checkpoint, truncated, or a pickle of other objects
        raise UsageError(f"weights: cannot read {path} as a state dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint that wraps the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: expected a state dict (names -> tensors)")
    return state


def mit_encoder(size: str = "b1", weights: str | None = None):
    """The MiT-``size`` encoder, ``transformers.SegformerModel``.

    Args:
        size: ``"b0"`` ... ``"b5"``.
        weights: ``None``: random initialisation (``transformers``' own), nothing is
            downloaded. Else a local path: a Hugging Face folder (``config.json`` and the
            weights, e.g. a saved ``nvidia/mit-b1`` or ``nvidia/segformer-b1-finetuned-ade-512-512``;
            its architecture must be MiT-``size``), or a state-dict file (``.pt``, ``.pth``,
            ``.bin``, ``.safetensors``) of a ``SegformerModel`` or of a whole
            ``SegformerForSemanticSegmentation`` / ``sapa.models.SegFormer`` (the ``segformer.``
            prefix is stripped and the decode head's entries are left out).

    Raises:
        UsageError: (a ``ValueError``) the path does not exist, cannot be read, or its weights
            are not MiT-``size``'s (naming the path and the mismatching entries).
    """
    transformers = _transformers()
    config = mit_config(size)
    if weights is None:
        return transformers.SegformerModel(config)
    if not os.path.exists(weights):
        raise UsageError(f"weights: no such file or folder: {weights!r}")
    if os.path.isdir(weights):
        if not os.path.exists(os.path.join(weights, "config.json")):
            raise UsageError(f"weights: {weights} is a folder without config.json; give a Hugging "
                             "Face model folder or a state-dict file")
        try:
            model = transformers.SegformerModel.from_pretrained(
                weights, local_files_only=True, attn_implementation="eager")
        except (OSError, ValueError) as exc:  # no weights file, an unreadable config, ...
            raise UsageError(f"weights: cannot load {weights} as a Hugging Face SegFormer ({exc})") from exc
        got = (tuple(model.config.hidden_sizes), tuple(model.config.depths))
        want = (tuple(config.hidden_sizes), tuple(config.depths))
        if got != want:
            raise UsageError(f"weights: {weights} holds a MiT with hidden sizes {list(got[0])} and "
                             f"depths {list(got[1])}, not MiT-{size}'s {list(want[0])}, {list(want[1])}")
        return model
    state = _state_dict_file(weights)
    state = {k.removeprefix("segformer."): v for k, v in state.items()
             if not k.startswith("decode_head.")}
    model = transformers.SegformerModel(config)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UsageError(f"weights: {weights} does not match MiT-{size} ({len(result.missing_keys)} "
                         f"missing entries, e.g. {result.missing_keys[:3]}; "
                         f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:3]})")
    return model


class LinearProjection(nn.Module):
    """SegFormer's per-scale "MLP": one ``nn.Linear(in_channels, embed_dim)`` over the channels
    of every pixel (named ``proj`` as in ``transformers``), applied to ``B x C x H x W`` as the
    equivalent 1x1 convolution, so the map never changes layout."""

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.proj.weight[:, :, None, None], self.proj.bias)


def is_resize(upsampler: nn.Module) -> bool:
    """Whether ``upsampler`` interpolates to any size (one resize per scale in the head)."""
    return isinstance(upsampler, (NearestUpsample, BilinearUpsample))


class SegFormerHead(nn.Module):
    """SegFormer's all-MLP decode head with a swappable upsampler (see the module docstring).

    ``forward(features)``: ``[c1, c2, c3, c4]``, ``B x in_channels[i] x H_i x W_i`` at strides
    4, 8, 16, 32; returns logits ``B x num_classes x H_1 x W_1`` (1/4 of the input). Guided
    upsamplers and the resizes take any sizes (MiT rounds odd sizes up: 512x683 gives c1
    128x171, c2 64x86); fixed-factor ones (CARAFE, deconv, ...) need each level exactly twice
    the next, i.e. inputs a multiple of 32, and say so otherwise.

    Args:
        in_channels: channels of ``c1 .. c4``.
        embed_dim: width of the projections (256 for MiT-B0/B1, 768 for B2-B5).
        num_classes: output channels.
        upsampler: a name from ``sapa.list_upsamplers()``.
        dropout: probability of the ``Dropout2d`` before the classifier.
        upsampler_kwargs: extra options for every upsampler module.

    Attributes:
        upsamplers: three resize modules (nearest / bilinear: ``c4``, ``c3``, ``c2``) or the six
            x2 stages, in the order of ``GUIDED_STAGES``.
    """

    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int,
                 upsampler: str = "bilinear", *, dropout: float = 0.1,
                 upsampler_kwargs: dict | None = None):
        super().__init__()
        in_channels = check_positive_ints("in_channels", in_channels)
        if len(in_channels) != 4:
            raise ValueError(f"in_channels must list the 4 MiT stages' channels, got {in_channels}")
        check_positive_ints("embed_dim", [embed_dim])
        check_num_classes(num_classes)
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.in_channels, self.embed_dim, self.num_classes = in_channels, embed_dim, num_classes
        self.upsampler_name = upsampler
        self.linear_projections = nn.ModuleList(LinearProjection(c, embed_dim) for c in in_channels)

        def make():
            return build_upsampler(upsampler, embed_dim, embed_dim, scale_factor=2,
                                   **(upsampler_kwargs or {}))

        first = make()
        self.resize = is_resize(first)
        n = 3 if self.resize else len(GUIDED_STAGES)
        self.upsamplers = nn.ModuleList([first, *(make() for _ in range(n - 1))])
        self.linear_fuse = nn.Conv2d(4 * embed_dim, embed_dim, 1, bias=False)
        self.batch_norm = nn.BatchNorm2d(embed_dim)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def check_features(self, features) -> None:
        if not isinstance(features, (list, tuple)) or len(features) != 4:
            raise ValueError("features must be a list of the 4 MiT stage outputs [c1, c2, c3, c4]")
        for i, (f, c) in enumerate(zip(features, self.in_channels)):
            if not isinstance(f, torch.Tensor) or f.dim() != 4 or f.shape[1] != c:
                got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ValueError(f"features[{i}] must be B x {c} x H x W, got {got}")
            if f.shape[0] != features[0].shape[0]:
                raise ValueError(f"features must share the batch size, got "
                                 f"{[f.shape[0] for f in features]}")
        sizes = [tuple(f.shape[-2:]) for f in features]
        if any(a[0] < b[0] or a[1] < b[1] for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"features must go from fine (c1) to coarse (c4), got spatial sizes {sizes}")

    def upsample(self, projected: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[c1, c2, c3, c4]`` (projected, ``embed_dim`` channels) -> all four at ``c1``'s size."""
        c = list(projected)
        if self.resize:
            for up, i in zip(self.upsamplers, (3, 2, 1)):
                c[i] = up(c[i], c[0])
            return c
        # c4's stages come first, while c3 and c2 are still at their own scale to guide them
        for up, (i, g) in zip(self.upsamplers, GUIDED_STAGES):
            c[i] = up(c[i], c[g])
        return c

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        self.check_features(features)
        c = self.upsample([proj(f) for proj, f in zip(self.linear_projections, features)])
        x = self.linear_fuse(torch.cat(c[::-1], dim=1))
        x = self.dropout(self.activation(self.batch_norm(x)))
        return self.classifier(x)

    def last_upsampler(self) -> nn.Module:
        """The upsampler called last (``c2`` to 1/4)."""
        return self.upsamplers[-1]


class SegFormer(nn.Module):
    """SegFormer: MiT encoder + all-MLP head, with the named upsampler in the head.

    ``forward(image)``: ``B x 3 x H x W`` (``H``, ``W`` multiples of 32); returns logits
    ``B x num_classes x H x W``: the head's 1/4-resolution logits (``decode``) resized
    bilinearly (``align_corners=False``), as SegFormer does for the loss and the metrics.

    Args:
        num_classes: output channels.
        upsampler: a name from ``sapa.list_upsamplers()``.
        size: MiT size, ``"b0"`` ... ``"b5"`` (the paper's Table 2: ``"b1"``).
        embed_dim: the head's width (default: the size's, 256 for B0/B1, 768 for B2-B5).
        dropout: the head's ``Dropout2d`` probability.
        weights: local path of pretrained encoder weights (see ``mit_encoder``); ``None``:
            random initialisation.
        upsampler_kwargs: extra options for every upsampler.
    """

    stride = 32

    def __init__(self, num_classes: int, upsampler: str = "bilinear", size: str = "b1", *,
                 embed_dim: int | None = None, dropout: float = 0.1, weights: str | None = None,
                 upsampler_kwargs: dict | None = None):
        super().__init__()
        spec = _check_size(size)
        check_num_classes(num_classes)
        # the head first: a bad upsampler or option fails before the encoder is built
        head = SegFormerHead(spec.hidden_sizes, embed_dim or spec.decoder_dim, num_classes,
                             upsampler, dropout=dropout, upsampler_kwargs=upsampler_kwargs)
        self.segformer = mit_encoder(size, weights)
        self.decode_head = head
        self.size, self.num_classes, self.upsampler_name = size, num_classes, upsampler

    def check_input(self, image: torch.Tensor) -> None:
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be a B x 3 x H x W tensor, got {got}")
        h, w = image.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"image height and width must be multiples of {self.stride} (MiT's "
                             f"coarsest stride), got {h}x{w}")

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``[c1, c2, c3, c4]``: the encoder's four stage outputs, strides 4 to 32."""
        self.check_input(image)
        return list(self.segformer(image, output_hidden_states=True).hidden_states)

    def decode(self, image: torch.Tensor) -> torch.Tensor:
        """Logits at 1/4 of the input, ``B x num_classes x H/4 x W/4``."""
        return self.decode_head(self.encode(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.decode(image)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def last_upsampler(self) -> nn.Module:
        """The upsampler called last (``c2`` to 1/4); used by the figures."""
        return self.decode_head.last_upsampler()
