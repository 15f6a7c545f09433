"""Argument and input checks shared by the upsampler modules (before any work is done)."""
from __future__ import annotations

import torch

from ..ops import _checks, dispatch


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def odd_int(name: str, value) -> int:
    positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd, got {value}")
    return value


def check_backend(backend, family: str = "window"):
    """``backend`` is ``None`` (the automatic choice) or a name the ops of ``family`` accept
    (``sapa.ops.list_backends(family)``, or an alias), checked by the ops' own dispatcher when a
    module is built, not at its first call."""
    dispatch.canonical_backend(backend, family)
    return backend


def check_x(x: torch.Tensor, in_channels: int) -> None:
    _checks.check_tensor("x", x)
    if x.shape[1] != in_channels:
        raise ValueError(
            f"x must have in_channels={in_channels} channels, got shape {tuple(x.shape)}")


def check_guided(module: str, x: torch.Tensor, guide, in_channels: int, guide_channels: int,
                 exact_scale: int | None = None) -> None:
    """``x`` ``B x C x H x W`` and ``guide`` ``B x Cg x H' x W'`` with ``H' >= H, W' >= W``;
    ``exact_scale=s`` further requires ``H' = sH, W' = sW`` (for fixed-factor methods)."""
    if guide is None:
        raise ValueError(
            f"{module} needs guide, the high-resolution encoder feature B x Cg x H' x W': "
            "call it as up(x, guide)")
    check_x(x, in_channels)
    _checks.check_tensor("guide", guide)
    _checks.check_same_kind({"x": x, "guide": guide})
    if guide.shape[1] != guide_channels:
        raise ValueError(
            f"guide must have guide_channels={guide_channels} channels, got shape {tuple(guide.shape)}")
    if x.shape[0] != guide.shape[0]:
        raise ValueError(
            f"x and guide must have the same batch size, got {x.shape[0]} and {guide.shape[0]}")
    _checks.check_guide_size(guide.shape[2], guide.shape[3], x.shape[2], x.shape[3], "guide", "x")
    if exact_scale is not None:
        h, w = x.shape[2:]
        s = exact_scale
        if tuple(guide.shape[2:]) != (s * h, s * w):
            raise ValueError(
                f"{module} upsamples exactly x{s}: guide must be {s}H x {s}W = {s * h}x{s * w} "
                f"for x of size {h}x{w}, got guide spatial size {guide.shape[2]}x{guide.shape[3]}")
