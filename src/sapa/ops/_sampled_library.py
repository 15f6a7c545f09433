"""``torch.ops.sapa.sampled_attention``: SAPA-D's operator registered through ``torch.library``.

Wraps the forward/backward protocol of a sampled-attention backend (see ``backends.lean.sampled``) in
a custom op with a fake (meta) implementation, registered autograd and a FLOP formula, as
``_library`` does for the window operator; the last argument names the backend module
``sapa.ops.sampled_<backend>``. The reference backend is plain differentiable PyTorch and
needs none of this.
"""
from __future__ import annotations

import importlib

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula


def load_backend(name: str):
    """The module implementing sampled-attention backend ``name``."""
    return importlib.import_module(f".backends.{name}.sampled", __package__)


def _stat_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("sapa::sampled_attention", mutates_args=())
def sampled_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, groups: int,
                      num_points: int, normalizer: str, backend: str) -> tuple[Tensor, Tensor]:
    return tuple(load_backend(backend).attention_fwd(q, k, v, offsets, groups, num_points,
                                                     normalizer))


@sampled_attention.register_fake
def _(q, k, v, offsets, groups, num_points, normalizer, backend):
    out = v.new_empty((v.shape[0], v.shape[1], q.shape[2], q.shape[3]))
    stat = q.new_empty((q.shape[0], groups, q.shape[2], q.shape[3]), dtype=_stat_dtype(q.dtype))
    return out, stat


@torch.library.custom_op("sapa::sampled_attention_backward", mutates_args=())
def sampled_attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, offsets: Tensor,
                               out: Tensor, stat: Tensor, groups: int, num_points: int,
                               normalizer: str, backend: str
                               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(load_backend(backend).attention_bwd(
        grad, q, k, v, offsets, out, stat, groups, num_points, normalizer))


@sampled_attention_backward.register_fake
def _(grad, q, k, v, offsets, out, stat, groups, num_points, normalizer, backend):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            torch.empty_like(offsets))


def _setup(ctx, inputs, output):
    q, k, v, offsets, groups, num_points, normalizer, backend = inputs
    ctx.save_for_backward(q, k, v, offsets, *output)
    ctx.args = (groups, num_points, normalizer, backend)


def _grad(ctx, grad_out, grad_stat):
    q, k, v, offsets, out, stat = ctx.saved_tensors
    gq, gk, gv, goff = sampled_attention_backward(grad_out, q, k, v, offsets, out, stat, *ctx.args)
    return gq, gk, gv, goff, None, None, None, None


sampled_attention.register_autograd(_grad, setup_context=_setup)


# ---- FLOPs (2 per multiply-add) --------------------------------------------------------------
# Per output point and sampled point, with d = Gd / G key and c = C / G value channels per group:
# a bilinear read costs 4 multiply-adds per channel (grid_sample, which torch's own counter
# does not count, so it is counted here), the score d and the assembly c.

def sampled_attention_macs(q_shape, v_shape, num_points) -> int:
    """Multiply-adds of one forward: ``B H' W' N (5 G d + 5 C)``."""
    points = q_shape[0] * q_shape[2] * q_shape[3]
    return points * num_points * 5 * (q_shape[1] + v_shape[1])


@register_flop_formula(torch.ops.sapa.sampled_attention)
def _forward_flops(q_shape, k_shape, v_shape, offsets_shape, groups, num_points, *args,
                   out_shape=None, **kwargs):
    return 2 * sampled_attention_macs(q_shape, v_shape, num_points)


@register_flop_formula(torch.ops.sapa.sampled_attention_backward)
def _backward_flops(grad_shape, q_shape, k_shape, v_shape, offsets_shape, out_shape_, stat_shape,
                    groups, num_points, *args, out_shape=None, **kwargs):
    # recomputed reads (4 per channel), score, dL/dw, dq and the two cotangents (3 per key and
    # 2 per value channel), grid_sample's backward (4 for the map and 8 for the grid per channel)
    points = q_shape[0] * q_shape[2] * q_shape[3]
    return 2 * points * num_points * (19 * q_shape[1] + 18 * v_shape[1])
