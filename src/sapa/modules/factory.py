"""One registry and one factory for every upsampler (as timm does for models).

Every registered builder has the signature
``builder(in_channels, guide_channels=None, scale_factor=2, **kwargs) -> nn.Module`` and the
module it returns is called as ``up(x, guide=None)`` -> ``B x C x H' x W'``.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ._inputs import positive_int

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# names whose modules need the guide (the encoder feature) in forward
_GUIDED: set[str] = set()


def register_upsampler(name: str, *, guided: bool):
    """Decorator: register ``builder`` under ``name``."""

    def deco(builder):
        if name in _REGISTRY:
            raise ValueError(f"upsampler {name!r} is already registered")
        _REGISTRY[name] = builder
        if guided:
            _GUIDED.add(name)
        return builder

    return deco


def list_upsamplers() -> list[str]:
    """Every name ``build_upsampler`` accepts, sorted."""
    return sorted(_REGISTRY)


def is_guided(name: str) -> bool:
    """Whether the upsampler ``name`` needs the guide feature."""
    _check_name(name)
    return name in _GUIDED


def _check_name(name):
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown upsampler {name!r}; known: {', '.join(list_upsamplers())}")


def build_upsampler(name: str, in_channels: int, guide_channels: int | None = None,
                    scale_factor: int = 2, **kwargs) -> nn.Module:
    """Build the upsampler registered as ``name``.

    Args:
        name: one of ``list_upsamplers()``.
        in_channels: ``C`` of the decoder feature ``x``.
        guide_channels: ``Cg`` of the guide (default ``C``); ignored by guide-free upsamplers.
        scale_factor: ``H' / H``, a positive int, checked for every upsampler. Guide-free
            upsamplers upsample by it; the x2-only ones (``a2u``, ``indexnet-*``) refuse any
            other value; ``sapa-d`` uses it with ``high_offset=True``; the other guided ones
            (``sapa-i/b/p/g``, ``fade``) take their output size from the guide and do not use it.
        **kwargs: the upsampler's own options.
    """
    _check_name(name)
    positive_int("scale_factor", scale_factor)
    return _REGISTRY[name](in_channels, guide_channels, scale_factor, **kwargs)
