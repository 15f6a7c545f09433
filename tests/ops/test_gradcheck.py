"""``torch.autograd.gradcheck`` in float64 of every op on every backend (finite differences
against each backend's own backward; the non-reference backends go through the
``torch.ops.sapa.*`` custom ops of ``sapa.ops._library``). The automatic choice is one of the
forced backends, so it is not repeated here."""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from sapa.ops import local_assemble, local_similarity, sapa_attention

NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
BORDERS = ("zeros", "valid")
# (H, W) -> (H', W'), K: sizes that are not a multiple, and a x2 with a window wider than the map
CASES = {"2x3->5x7,K3": ((2, 3), (5, 7), 3), "2x2->4x4,K5": ((2, 2), (4, 4), 5)}


def _leaves(gen, *shapes):
    return [torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("normalizer", NORMALIZERS)
@pytest.mark.parametrize("border", BORDERS)
def test_attention_gradcheck(forced_backend, border, normalizer, case, require_backend):
    (h, w), (ho, wo), kernel_size = CASES[case]
    gen = torch.Generator().manual_seed(1)
    q, k, v = _leaves(gen, (1, 2, ho, wo), (1, 2, h, w), (1, 2, h, w))
    require_backend(forced_backend, q, k, v)

    def op(q, k, v):
        return sapa_attention(q, k, v, kernel_size, normalizer=normalizer, border=border,
                              backend=forced_backend)

    assert gradcheck(op, (q, k, v))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("border", BORDERS)
def test_similarity_gradcheck(forced_backend, border, case, require_backend):
    (h, w), (ho, wo), kernel_size = CASES[case]
    gen = torch.Generator().manual_seed(2)
    q, k = _leaves(gen, (1, 2, ho, wo), (1, 2, h, w))
    require_backend(forced_backend, q, k)
    r = kernel_size // 2
    # which window points lie outside the map, computed here from the definition
    rows = torch.arange(ho) * h // ho
    cols = torch.arange(wo) * w // wo
    offsets = torch.arange(-r, r + 1)[:, None]
    row_in = (rows + offsets >= 0) & (rows + offsets < h)  # K x H'
    col_in = (cols + offsets >= 0) & (cols + offsets < w)  # K x W'
    inside = (row_in[:, None, :, None] & col_in[None, :, None, :]).reshape(1, -1, ho, wo)

    scores = local_similarity(q, k, kernel_size, border=border, backend=forced_backend)
    if border == "valid":
        assert torch.equal(~torch.isfinite(scores), ~inside)
        assert torch.isneginf(scores[~inside]).all()
    else:
        assert torch.isfinite(scores).all() and (scores[~inside] == 0).all()

    def op(q, k):
        s = local_similarity(q, k, kernel_size, border=border, backend=forced_backend)
        return s.masked_fill(~torch.isfinite(s), 0.0)  # gradcheck cannot difference -inf

    assert gradcheck(op, (q, k))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("border", BORDERS)
def test_assemble_gradcheck(forced_backend, border, case, require_backend):
    (h, w), (ho, wo), kernel_size = CASES[case]
    gen = torch.Generator().manual_seed(3)
    kernels, v = _leaves(gen, (1, kernel_size**2, ho, wo), (1, 2, h, w))
    require_backend(forced_backend, kernels, v)

    def op(kernels, v):
        return local_assemble(kernels, v, kernel_size, border=border, backend=forced_backend)

    assert gradcheck(op, (kernels, v))
