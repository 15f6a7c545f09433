"""Argument validation shared by every public op.

Everything here runs before any work is done, so a bad call fails fast with an
error that names the argument and what was expected.
"""
from __future__ import annotations

import torch

from ._normalizers import NAMES as NORMALIZERS

BORDERS = ("zeros", "valid")


def check_tensor(name: str, t, ndim: int = 4) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D (B x C x H x W), got shape {tuple(t.shape)}"
        )
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_nonempty(name: str, t: torch.Tensor, channels: str, spatial: str) -> None:
    """``t`` (4-D) has at least one channel, one row and one column. The batch may be empty
    (the op then returns an empty result); a feature with no channels or no points has nothing
    to compare or reassemble, and is refused rather than given a made-up meaning."""
    if t.shape[1] == 0:
        raise ValueError(
            f"{name} must have at least one channel ({channels} >= 1), got shape {tuple(t.shape)}")
    if t.shape[2] == 0 or t.shape[3] == 0:
        raise ValueError(
            f"{name} must have a non-empty spatial size {spatial} (at least 1 x 1), got shape "
            f"{tuple(t.shape)}")


def check_kernel_size(kernel_size) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise TypeError(
            f"kernel_size must be an int, got {type(kernel_size).__name__} ({kernel_size!r})"
        )
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size}")
    return kernel_size


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_same_kind(named: dict) -> None:
    """All tensors share one dtype and one device (nothing is silently cast or moved)."""
    items = list(named.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; "
                "all inputs must share one dtype"
            )
        if t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; "
                "all inputs must be on one device"
            )


def check_guide_size(hq: int, wq: int, hk: int, wk: int, qname: str = "q", kname: str = "k"):
    if hq < hk or wq < wk:
        raise ValueError(
            f"{qname} (the high-resolution side) must be at least as large as {kname}: "
            f"got {qname} spatial size {hq}x{wq} and {kname} spatial size {hk}x{wk}"
        )


def check_similarity_args(q, k, kernel_size, border) -> None:
    check_tensor("q", q)
    check_tensor("k", k)
    check_same_kind({"q": q, "k": k})
    check_nonempty("q", q, "d", "H' x W'")
    check_nonempty("k", k, "d", "H x W")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q and k must have the same batch size, got {q.shape[0]} and {k.shape[0]}")
    if q.shape[1] != k.shape[1]:
        raise ValueError(
            f"q and k must have the same number of channels d, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}"
        )
    check_guide_size(q.shape[2], q.shape[3], k.shape[2], k.shape[3])
    check_kernel_size(kernel_size)
    check_choice("border", border, BORDERS)


def check_assemble_args(kernels, v, kernel_size, border) -> None:
    check_tensor("kernels", kernels)
    check_tensor("v", v)
    check_same_kind({"kernels": kernels, "v": v})
    check_nonempty("kernels", kernels, "K*K", "H' x W'")
    check_nonempty("v", v, "C", "H x W")
    check_kernel_size(kernel_size)
    if kernels.shape[0] != v.shape[0]:
        raise ValueError(
            f"kernels and v must have the same batch size, got {kernels.shape[0]} and {v.shape[0]}"
        )
    if kernels.shape[1] != kernel_size * kernel_size:
        raise ValueError(
            f"kernels must have kernel_size**2 = {kernel_size * kernel_size} channels "
            f"(B x K*K x H' x W'), got shape {tuple(kernels.shape)}"
        )
    check_guide_size(kernels.shape[2], kernels.shape[3], v.shape[2], v.shape[3], "kernels", "v")
    check_choice("border", border, BORDERS)


def check_attention_args(q, k, v, kernel_size, normalizer, border) -> None:
    check_tensor("q", q)
    check_tensor("k", k)
    check_tensor("v", v)
    check_same_kind({"q": q, "k": k, "v": v})
    check_nonempty("q", q, "d", "H' x W'")
    check_nonempty("k", k, "d", "H x W")
    check_nonempty("v", v, "C", "H x W")
    b = q.shape[0]
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(
            f"q, k and v must share the batch size, got {q.shape[0]}, {k.shape[0]} and {v.shape[0]}"
        )
    if q.shape[1] != k.shape[1]:
        raise ValueError(
            f"q and k must have the same number of channels d, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}"
        )
    if k.shape[2:] != v.shape[2:]:
        raise ValueError(
            f"k and v must have the same spatial size H x W, got k {tuple(k.shape)} "
            f"and v {tuple(v.shape)}"
        )
    check_guide_size(q.shape[2], q.shape[3], k.shape[2], k.shape[3])
    check_kernel_size(kernel_size)
    check_choice("normalizer", normalizer, NORMALIZERS)
    check_choice("border", border, BORDERS)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_sampled_args(q, k, offsets, groups, num_points, v=None) -> None:
    """Arguments of ``sampled_attention`` (with ``v``) and ``sampled_similarity`` (without)."""
    named = {"q": q, "k": k} if v is None else {"q": q, "k": k, "v": v}
    named["offsets"] = offsets
    for name, t in named.items():
        check_tensor(name, t)
    check_same_kind(named)
    check_positive_int("groups", groups)
    check_positive_int("num_points", num_points)
    for name, t in named.items():
        check_nonempty(name, t, {"q": "G*d", "k": "G*d", "v": "C", "offsets": "2*G*N"}[name],
                       "H x W" if name in ("k", "v") else "H' x W'")
    batch = {name: t.shape[0] for name, t in named.items()}
    # compared pairwise, not through a set: symbolic sizes (torch.export) are unhashable
    if any(b != q.shape[0] for b in batch.values()):
        raise ValueError(f"{', '.join(batch)} must share the batch size, got {batch}")
    if q.shape[1] != k.shape[1]:
        raise ValueError(
            f"q and k must have the same number of channels G*d, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}")
    if q.shape[1] % groups:
        raise ValueError(
            f"the channels of q and k ({q.shape[1]}) must be divisible by groups={groups}")
    if v is not None:
        if v.shape[1] % groups:
            raise ValueError(
                f"the channels of v ({v.shape[1]}) must be divisible by groups={groups}")
        if k.shape[2:] != v.shape[2:]:
            raise ValueError(
                f"k and v must have the same spatial size H x W, got k {tuple(k.shape)} "
                f"and v {tuple(v.shape)}")
    check_guide_size(q.shape[2], q.shape[3], k.shape[2], k.shape[3])
    expected = (q.shape[0], 2 * groups * num_points, q.shape[2], q.shape[3])
    if tuple(offsets.shape) != expected:
        raise ValueError(
            f"offsets must be B x 2*groups*num_points x H' x W' = {expected} "
            f"(groups={groups}, num_points={num_points}, H' x W' of q), got {tuple(offsets.shape)}")
