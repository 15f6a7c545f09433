"""Channel normalisations for NCHW feature maps (SAPA normalises q and k inputs before similarity)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("layer", "group", "none")


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channel dimension of a ``B x C x H x W`` map, at every pixel.

    Returns ``layer_norm``'s channels-last result as a ``B x C x H x W`` view (no copy back to
    NCHW); the 1x1 projections that follow are ``Pointwise``, which read it as it lies (a bare
    convolution on it does not compile with dynamic sizes, see ``Pointwise``).
    """

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def build_norm(kind: str, channels: int) -> nn.Module:
    """``"layer"``: LayerNorm over channels (the paper); ``"group"``: GroupNorm with up to 32
    groups (the authors' extension); ``"none"``: identity."""
    if kind == "layer":
        return ChannelLayerNorm(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")


class _LayerNormProject(torch.autograd.Function):
    """``weight @ layer_norm(x over channels) + bias`` at every pixel of ``B x C x H x W`` ``x``
    (the norm without affine: fold it into ``weight`` and ``bias``), computed in NCHW.

    Why not ``conv1x1(ChannelLayerNorm(x))``: that permutes ``x`` to channels-last and back,
    and those copies cost several times the norm itself on the CPU (a 2 x 256 x 64 x 64
    transpose takes longer than the norm and the projection together); and autograd keeps
    two ``C``-channel maps per call for the backward (the channels-last copy and the norm's
    output). Here statistics and products run on contiguous NCHW data, and the backward
    recomputes the normalised map from ``x`` and the saved per-pixel mean and 1/std.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        b, c, h, w = x.shape
        xv = x.reshape(b, c, h * w)
        mean = xv.mean(1, keepdim=True)
        xhat = xv - mean
        rstd = torch.rsqrt(xhat.square().mean(1, keepdim=True) + eps)
        xhat.mul_(rstd)
        # bmm over an expanded weight: matmul would fold the batch into a transposed copy
        out = torch.bmm(weight.expand(b, -1, -1), xhat).add_(bias[:, None])
        ctx.save_for_backward(x, mean, rstd, weight)
        return out.view(b, -1, h, w)

    @staticmethod
    def backward(ctx, grad):
        x, mean, rstd, weight = ctx.saved_tensors
        b, c, h, w = x.shape
        g = grad.reshape(b, -1, h * w)
        xhat = (x.reshape(b, c, h * w) - mean).mul_(rstd)
        grad_weight = torch.bmm(g, xhat.transpose(1, 2)).sum(0)
        grad_bias = g.sum((0, 2))
        grad_x = None
        if ctx.needs_input_grad[0]:
            u = torch.bmm(weight.t().expand(b, -1, -1), g)  # d loss / d xhat
            mean_u = u.mean(1, keepdim=True)
            mean_ux = (u * xhat).mean(1, keepdim=True)
            grad_x = u.sub_(mean_u).sub_(xhat.mul_(mean_ux)).mul_(rstd).view(b, c, h, w)
        return grad_x, grad_weight, grad_bias, None


def project_normalized(x: torch.Tensor, norm: nn.Module, projections) -> list[torch.Tensor]:
    """``[p(norm(x)) for p in projections]``: 1x1 convolutions of the channel-normalised ``x``
    (``B x C x H x W``), each ``B x d_i x H x W``.

    With ``ChannelLayerNorm`` and gradients being recorded the projections run as one product
    through ``_LayerNormProject`` (the norm's affine folded into the projection), the same
    values and gradients as ``p(norm(x))`` with no channels-last copies and no ``C``-channel
    map kept for the backward; otherwise, and under autocast (whose policy for the two ops
    then applies unchanged), it is ``p(norm(x))`` as written. Under ``torch.compile`` too: the
    compiler fuses ``p(norm(x))`` itself, and Dynamo cannot trace the autograd function when it
    makes the norm's ``eps`` a symbolic float (dynamic shapes).
    """
    lean = (type(norm) is ChannelLayerNorm and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled(x.device.type) and x.dim() == 4
            and all(isinstance(p, nn.Conv2d) and p.kernel_size == (1, 1) and p.groups == 1
                    for p in projections))
    if not lean:
        xn = norm(x)
        return [p(xn) for p in projections]
    weight = torch.cat([p.weight[:, :, 0, 0] for p in projections])
    bias = torch.cat([p.bias if p.bias is not None else weight.new_zeros(p.out_channels)
                      for p in projections])
    if norm.bias is not None:  # W (w * xhat + beta) + bias = (W diag(w)) xhat + (W beta + bias)
        bias = bias + weight @ norm.bias
    if norm.weight is not None:
        weight = weight * norm.weight
    out = _LayerNormProject.apply(x.contiguous(), weight, bias, norm.eps)
    return list(out.split([p.out_channels for p in projections], dim=1))
