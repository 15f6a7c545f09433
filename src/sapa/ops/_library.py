"""``torch.ops.sapa.*``: every op registered through ``torch.library``, for both op families.

Each op of the window family (``attention``, ``similarity``, ``assemble``) and the sampled
family (``sampled_attention``) is a pair of custom ops, forward and backward, over the
forward/backward protocol of ``sapa.ops.backends.Backend``, with fake (meta) implementations,
registered autograd and FLOP formulas, so that ``torch.compile(fullgraph=True)``,
``torch.export`` and ``torch.library.opcheck`` see one opaque op whatever backend runs, and
``torch.utils.flop_counter`` counts its FLOPs (2 per multiply-add, as the counter does for
matmuls). The reference backend is plain differentiable PyTorch and needs none of this.

The last argument of every op names its backend, or is ``"auto"``: the backend is then chosen
when the op runs (``dispatch.run``), on the tensors it runs on.

Layouts. The real outputs have the strides their fakes promise (compiled graphs assert them):
forward outputs contiguous, gradients laid out as ``torch.empty_like(input)``.

Double backward. A gradient computed with ``create_graph=True`` (gradient penalties,
``torch.autograd.gradgradcheck``) must itself be differentiable. The backends' backward
kernels are not, so then the registered autograd computes the gradient as the reference's
vector-Jacobian product (``torch.func.vjp``), which autograd differentiates again: the same
numbers, with the reference's memory (``O(K^2 C H' W')``).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from . import dispatch
from ._dtypes import compute_dtype
from .backends import reference
from .backends.reference import sampled as sampled_reference


def _out_shape(big: Tensor, small: Tensor, channels: int):
    return (small.shape[0], channels, big.shape[2], big.shape[3])


def _contiguous(*ts):
    return tuple(t.contiguous() for t in ts)


def _like(grads, inputs):
    """Gradients with the strides of ``torch.empty_like(input)`` (a copy only where they
    differ: a backend may return NCHW gradients of channels_last inputs)."""
    out = []
    for g, x in zip(grads, inputs):
        if g.stride() != torch.empty_like(x, device="meta").stride():
            g = torch.empty_like(x).copy_(g)
        out.append(g)
    return tuple(out)


def _reference_vjp(fn, inputs, grad, *args):
    """``d<fn(*inputs, *args), grad>/d inputs``, differentiable (double backward)."""
    _, vjp = torch.func.vjp(lambda *t: fn(*t, *args), *inputs)
    return vjp(grad)


# ---- attention -------------------------------------------------------------------------------

@torch.library.custom_op("sapa::attention", mutates_args=())
def attention(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, normalizer: str, border: str,
              backend: str) -> tuple[Tensor, Tensor]:
    return _contiguous(*dispatch.run(backend, "attention_fwd", (q, k, v),
                                     q, k, v, kernel_size, normalizer, border))


@attention.register_fake
def _(q, k, v, kernel_size, normalizer, border, backend):
    out = v.new_empty(_out_shape(q, v, v.shape[1]))
    stat = q.new_empty((q.shape[0], q.shape[2], q.shape[3]), dtype=compute_dtype(q.dtype))
    return out, stat


@torch.library.custom_op("sapa::attention_backward", mutates_args=())
def attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, stat: Tensor,
                       kernel_size: int, normalizer: str, border: str,
                       backend: str) -> tuple[Tensor, Tensor, Tensor]:
    grads = dispatch.run(backend, "attention_bwd", (q, k, v),
                         grad, q, k, v, out, stat, kernel_size, normalizer, border)
    return _like(grads, (q, k, v))


@attention_backward.register_fake
def _(grad, q, k, v, out, stat, kernel_size, normalizer, border, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _attention_setup(ctx, inputs, output):
    q, k, v, kernel_size, normalizer, border, backend = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.args = (kernel_size, normalizer, border, backend)


def _attention_grad(ctx, grad_out, grad_stat):
    q, k, v, out, stat = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        kernel_size, normalizer, border, _ = ctx.args
        grads = _reference_vjp(reference.sapa_attention, (q, k, v), grad_out, kernel_size,
                               normalizer, border)
    else:
        grads = attention_backward(grad_out, q, k, v, out, stat, *ctx.args)
    return *grads, None, None, None, None


attention.register_autograd(_attention_grad, setup_context=_attention_setup)


# ---- similarity ------------------------------------------------------------------------------

@torch.library.custom_op("sapa::similarity", mutates_args=())
def similarity(q: Tensor, k: Tensor, kernel_size: int, border: str, backend: str) -> Tensor:
    return dispatch.run(backend, "similarity_fwd", (q, k), q, k, kernel_size, border).contiguous()


@similarity.register_fake
def _(q, k, kernel_size, border, backend):
    return q.new_empty(_out_shape(q, k, kernel_size * kernel_size))


@torch.library.custom_op("sapa::similarity_backward", mutates_args=())
def similarity_backward(grad: Tensor, q: Tensor, k: Tensor, kernel_size: int, border: str,
                        backend: str) -> tuple[Tensor, Tensor]:
    grads = dispatch.run(backend, "similarity_bwd", (q, k), grad, q, k, kernel_size, border)
    return _like(grads, (q, k))


@similarity_backward.register_fake
def _(grad, q, k, kernel_size, border, backend):
    return torch.empty_like(q), torch.empty_like(k)


def _similarity_setup(ctx, inputs, output):
    q, k, kernel_size, border, backend = inputs
    ctx.save_for_backward(q, k)
    ctx.args = (kernel_size, border, backend)


def _similarity_grad(ctx, grad):
    q, k = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        kernel_size, border, _ = ctx.args
        grads = _reference_vjp(reference.local_similarity, (q, k), grad, kernel_size, border)
    else:
        grads = similarity_backward(grad, q, k, *ctx.args)
    return *grads, None, None, None


similarity.register_autograd(_similarity_grad, setup_context=_similarity_setup)


# ---- assemble --------------------------------------------------------------------------------

@torch.library.custom_op("sapa::assemble", mutates_args=())
def assemble(kernels: Tensor, v: Tensor, kernel_size: int, border: str, backend: str) -> Tensor:
    return dispatch.run(backend, "assemble_fwd", (kernels, v),
                        kernels, v, kernel_size, border).contiguous()


@assemble.register_fake
def _(kernels, v, kernel_size, border, backend):
    return v.new_empty(_out_shape(kernels, v, v.shape[1]))


@torch.library.custom_op("sapa::assemble_backward", mutates_args=())
def assemble_backward(grad: Tensor, kernels: Tensor, v: Tensor, kernel_size: int, border: str,
                      backend: str) -> tuple[Tensor, Tensor]:
    grads = dispatch.run(backend, "assemble_bwd", (kernels, v),
                         grad, kernels, v, kernel_size, border)
    return _like(grads, (kernels, v))


@assemble_backward.register_fake
def _(grad, kernels, v, kernel_size, border, backend):
    return torch.empty_like(kernels), torch.empty_like(v)


def _assemble_setup(ctx, inputs, output):
    kernels, v, kernel_size, border, backend = inputs
    ctx.save_for_backward(kernels, v)
    ctx.args = (kernel_size, border, backend)


def _assemble_grad(ctx, grad):
    kernels, v = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        kernel_size, border, _ = ctx.args
        grads = _reference_vjp(reference.local_assemble, (kernels, v), grad, kernel_size, border)
    else:
        grads = assemble_backward(grad, kernels, v, *ctx.args)
    return *grads, None, None, None


assemble.register_autograd(_assemble_grad, setup_context=_assemble_setup)


# ---- sampled attention (SAPA-D) --------------------------------------------------------------

@torch.library.custom_op("sapa::sampled_attention", mutates_args=())
def sampled_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, groups: int,
                      num_points: int, normalizer: str, backend: str) -> tuple[Tensor, Tensor]:
    return _contiguous(*dispatch.run(backend, "sampled_fwd", (q, k, v, offsets),
                                     q, k, v, offsets, groups, num_points, normalizer))


@sampled_attention.register_fake
def _(q, k, v, offsets, groups, num_points, normalizer, backend):
    out = v.new_empty((v.shape[0], v.shape[1], q.shape[2], q.shape[3]))
    stat = q.new_empty((q.shape[0], groups, q.shape[2], q.shape[3]),
                       dtype=compute_dtype(q.dtype))
    return out, stat


@torch.library.custom_op("sapa::sampled_attention_backward", mutates_args=())
def sampled_attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, offsets: Tensor,
                               out: Tensor, stat: Tensor, groups: int, num_points: int,
                               normalizer: str, backend: str
                               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    grads = dispatch.run(backend, "sampled_bwd", (q, k, v, offsets),
                         grad, q, k, v, offsets, out, stat, groups, num_points, normalizer)
    return _like(grads, (q, k, v, offsets))


@sampled_attention_backward.register_fake
def _(grad, q, k, v, offsets, out, stat, groups, num_points, normalizer, backend):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            torch.empty_like(offsets))


def _sampled_setup(ctx, inputs, output):
    q, k, v, offsets, groups, num_points, normalizer, backend = inputs
    ctx.save_for_backward(q, k, v, offsets, *output)
    ctx.args = (groups, num_points, normalizer, backend)


def _sampled_grad(ctx, grad_out, grad_stat):
    q, k, v, offsets, out, stat = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        groups, num_points, normalizer, _ = ctx.args
        grads = _reference_vjp(sampled_reference.sampled_attention, (q, k, v, offsets),
                               grad_out, groups, num_points, normalizer)
    else:
        grads = sampled_attention_backward(grad_out, q, k, v, offsets, out, stat, *ctx.args)
    return *grads, None, None, None, None


sampled_attention.register_autograd(_sampled_grad, setup_context=_sampled_setup)


# ---- FLOPs (2 per multiply-add) --------------------------------------------------------------

def _points(shape):
    return shape[0] * shape[2] * shape[3]


@register_flop_formula(torch.ops.sapa.attention)
def _attention_flops(q_shape, k_shape, v_shape, kernel_size, *args, out_shape=None, **kwargs):
    # scores (d MACs) and assembly (C MACs) for each of the K*K window points of each output point
    return 2 * _points(q_shape) * kernel_size**2 * (q_shape[1] + v_shape[1])


@register_flop_formula(torch.ops.sapa.attention_backward)
def _attention_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None,
                              **kwargs):
    # recomputed scores, dL/dw, dq, dk (d, C, d, d MACs) and dv (C MACs) per window point
    kernel_size = args[2]
    return 2 * _points(q_shape) * kernel_size**2 * (3 * q_shape[1] + 2 * v_shape[1])


@register_flop_formula(torch.ops.sapa.similarity)
def _similarity_flops(q_shape, k_shape, kernel_size, *args, out_shape=None, **kwargs):
    return 2 * _points(q_shape) * kernel_size**2 * q_shape[1]


@register_flop_formula(torch.ops.sapa.similarity_backward)
def _similarity_backward_flops(grad_shape, q_shape, k_shape, kernel_size, *args, out_shape=None,
                               **kwargs):
    return 4 * _points(q_shape) * kernel_size**2 * q_shape[1]


@register_flop_formula(torch.ops.sapa.assemble)
def _assemble_flops(kernels_shape, v_shape, kernel_size, *args, out_shape=None, **kwargs):
    return 2 * _points(kernels_shape) * kernel_size**2 * v_shape[1]


@register_flop_formula(torch.ops.sapa.assemble_backward)
def _assemble_backward_flops(grad_shape, kernels_shape, v_shape, kernel_size, *args,
                             out_shape=None, **kwargs):
    return 4 * _points(kernels_shape) * kernel_size**2 * v_shape[1]


# Sampled attention, per output point and sampled point, with d = Gd / G key and c = C / G value
# channels per group: a bilinear read costs 4 multiply-adds per channel (grid_sample, which
# torch's own counter does not count, so it is counted here), the score d and the assembly c.

def sampled_attention_macs(q_shape, v_shape, num_points) -> int:
    """Multiply-adds of one sampled-attention forward: ``B H' W' N (5 G d + 5 C)``."""
    return _points(q_shape) * num_points * 5 * (q_shape[1] + v_shape[1])


@register_flop_formula(torch.ops.sapa.sampled_attention)
def _sampled_flops(q_shape, k_shape, v_shape, offsets_shape, groups, num_points, *args,
                   out_shape=None, **kwargs):
    return 2 * sampled_attention_macs(q_shape, v_shape, num_points)


@register_flop_formula(torch.ops.sapa.sampled_attention_backward)
def _sampled_backward_flops(grad_shape, q_shape, k_shape, v_shape, offsets_shape, out_shape_,
                            stat_shape, groups, num_points, *args, out_shape=None, **kwargs):
    # recomputed reads (4 per channel), score, dL/dw, dq and the two cotangents (3 per key and
    # 2 per value channel), grid_sample's backward (4 for the map and 8 for the grid per channel)
    return 2 * _points(q_shape) * num_points * (19 * q_shape[1] + 18 * v_shape[1])
