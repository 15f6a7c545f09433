"""``torch.ops.sapa.*``: the ops registered through ``torch.library``.

Every backend but the reference implements the same forward/backward protocol::

    attention_fwd(q, k, v, K, normalizer, border)            -> (out, stat)
    attention_bwd(grad, q, k, v, out, stat, K, normalizer, border) -> (gq, gk, gv)
    similarity_fwd(q, k, K, border)                         -> scores
    similarity_bwd(grad, q, k, K, border)                   -> (gq, gk)
    assemble_fwd(kernels, v, K, border)                     -> out
    assemble_bwd(grad, kernels, v, K, border)               -> (gkern, gv)

(``stat``: ``B x H' x W'``, see ``_normalizers``). This module wraps each pair in a custom op
whose last argument names the backend, with a fake (meta) implementation and registered
autograd, so ``torch.compile(fullgraph=True)``, ``torch.export`` and
``torch.library.opcheck`` see one opaque op whatever backend runs. Their FLOPs are registered
with ``torch.utils.flop_counter`` (2 per multiply-add, as the counter does for matmuls).
The reference backend is plain differentiable PyTorch and needs none of this.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from .dispatch import load_backend


def stat_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _out_shape(big: Tensor, small: Tensor, channels: int):
    return (small.shape[0], channels, big.shape[2], big.shape[3])


# The real outputs must have the strides their fakes promise (compiled graphs assert them):
# forward outputs contiguous, gradients laid out as ``torch.empty_like(input)``. A backend
# may return other layouts (a slice of a padded buffer, NCHW for a channels_last input);
# these two helpers copy only then.

def _contiguous(*ts):
    return tuple(t.contiguous() for t in ts)


def _like(grads, inputs):
    out = []
    for g, x in zip(grads, inputs):
        if g.stride() != x.stride():
            g = torch.empty_like(x).copy_(g)
        out.append(g)
    return tuple(out)


# ---- attention -------------------------------------------------------------------------------

@torch.library.custom_op("sapa::attention", mutates_args=())
def attention(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, normalizer: str, border: str,
              backend: str) -> tuple[Tensor, Tensor]:
    out, stat = load_backend(backend).attention_fwd(q, k, v, kernel_size, normalizer, border)
    return _contiguous(out, stat)


@attention.register_fake
def _(q, k, v, kernel_size, normalizer, border, backend):
    out = v.new_empty(_out_shape(q, v, v.shape[1]))
    stat = q.new_empty((q.shape[0], q.shape[2], q.shape[3]), dtype=stat_dtype(q.dtype))
    return out, stat


@torch.library.custom_op("sapa::attention_backward", mutates_args=())
def attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, stat: Tensor,
                       kernel_size: int, normalizer: str, border: str,
                       backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _like(load_backend(backend).attention_bwd(
        grad, q, k, v, out, stat, kernel_size, normalizer, border), (q, k, v))


@attention_backward.register_fake
def _(grad, q, k, v, out, stat, kernel_size, normalizer, border, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _attention_setup(ctx, inputs, output):
    q, k, v, kernel_size, normalizer, border, backend = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.args = (kernel_size, normalizer, border, backend)


def _attention_grad(ctx, grad_out, grad_stat):
    q, k, v, out, stat = ctx.saved_tensors
    gq, gk, gv = attention_backward(grad_out, q, k, v, out, stat, *ctx.args)
    return gq, gk, gv, None, None, None, None


attention.register_autograd(_attention_grad, setup_context=_attention_setup)


# ---- similarity ------------------------------------------------------------------------------

@torch.library.custom_op("sapa::similarity", mutates_args=())
def similarity(q: Tensor, k: Tensor, kernel_size: int, border: str, backend: str) -> Tensor:
    return load_backend(backend).similarity_fwd(q, k, kernel_size, border).contiguous()


@similarity.register_fake
def _(q, k, kernel_size, border, backend):
    return q.new_empty(_out_shape(q, k, kernel_size * kernel_size))


@torch.library.custom_op("sapa::similarity_backward", mutates_args=())
def similarity_backward(grad: Tensor, q: Tensor, k: Tensor, kernel_size: int, border: str,
                        backend: str) -> tuple[Tensor, Tensor]:
    return _like(load_backend(backend).similarity_bwd(grad, q, k, kernel_size, border), (q, k))


@similarity_backward.register_fake
def _(grad, q, k, kernel_size, border, backend):
    return torch.empty_like(q), torch.empty_like(k)


def _similarity_setup(ctx, inputs, output):
    q, k, kernel_size, border, backend = inputs
    ctx.save_for_backward(q, k)
    ctx.args = (kernel_size, border, backend)


def _similarity_grad(ctx, grad):
    q, k = ctx.saved_tensors
    gq, gk = similarity_backward(grad, q, k, *ctx.args)
    return gq, gk, None, None, None


similarity.register_autograd(_similarity_grad, setup_context=_similarity_setup)


# ---- assemble --------------------------------------------------------------------------------

@torch.library.custom_op("sapa::assemble", mutates_args=())
def assemble(kernels: Tensor, v: Tensor, kernel_size: int, border: str, backend: str) -> Tensor:
    return load_backend(backend).assemble_fwd(kernels, v, kernel_size, border).contiguous()


@assemble.register_fake
def _(kernels, v, kernel_size, border, backend):
    return v.new_empty(_out_shape(kernels, v, v.shape[1]))


@torch.library.custom_op("sapa::assemble_backward", mutates_args=())
def assemble_backward(grad: Tensor, kernels: Tensor, v: Tensor, kernel_size: int, border: str,
                      backend: str) -> tuple[Tensor, Tensor]:
    return _like(load_backend(backend).assemble_bwd(grad, kernels, v, kernel_size, border),
                 (kernels, v))


@assemble_backward.register_fake
def _(grad, kernels, v, kernel_size, border, backend):
    return torch.empty_like(kernels), torch.empty_like(v)


def _assemble_setup(ctx, inputs, output):
    kernels, v, kernel_size, border, backend = inputs
    ctx.save_for_backward(kernels, v)
    ctx.args = (kernel_size, border, backend)


def _assemble_grad(ctx, grad):
    kernels, v = ctx.saved_tensors
    gkern, gv = assemble_backward(grad, kernels, v, *ctx.args)
    return gkern, gv, None, None, None


assemble.register_autograd(_assemble_grad, setup_context=_assemble_setup)


# ---- FLOPs (2 per multiply-add) --------------------------------------------------------------

def _points(shape):
    return shape[0] * shape[2] * shape[3]


@register_flop_formula(torch.ops.sapa.attention)
def _attention_flops(q_shape, k_shape, v_shape, kernel_size, *args, out_shape=None, **kwargs):
    # scores (d MACs) and assembly (C MACs) for each of the K*K window points of each output point
    return 2 * _points(q_shape) * kernel_size**2 * (q_shape[1] + v_shape[1])


@register_flop_formula(torch.ops.sapa.attention_backward)
def _attention_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs):
    # recomputed scores, dL/dw, dq, dk (d, C, d, d MACs) and dv (C MACs) per window point
    kernel_size = args[2]
    return 2 * _points(q_shape) * kernel_size**2 * (3 * q_shape[1] + 2 * v_shape[1])


@register_flop_formula(torch.ops.sapa.similarity)
def _similarity_flops(q_shape, k_shape, kernel_size, *args, out_shape=None, **kwargs):
    return 2 * _points(q_shape) * kernel_size**2 * q_shape[1]


@register_flop_formula(torch.ops.sapa.similarity_backward)
def _similarity_backward_flops(grad_shape, q_shape, k_shape, kernel_size, *args, out_shape=None, **kwargs):
    return 4 * _points(q_shape) * kernel_size**2 * q_shape[1]


@register_flop_formula(torch.ops.sapa.assemble)
def _assemble_flops(kernels_shape, v_shape, kernel_size, *args, out_shape=None, **kwargs):
    return 2 * _points(kernels_shape) * kernel_size**2 * v_shape[1]


@register_flop_formula(torch.ops.sapa.assemble_backward)
def _assemble_backward_flops(grad_shape, kernels_shape, v_shape, kernel_size, *args, out_shape=None, **kwargs):
    return 4 * _points(kernels_shape) * kernel_size**2 * v_shape[1]
