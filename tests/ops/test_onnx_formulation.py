"""The ops as ONNX exporters trace them (``sapa.ops._onnx``), run eagerly: against the plain-loop
ground truth and the reference, on every normaliser, border and window/map size; the switch
to them while an exporter traces; and the decompositions of the custom ops. No ONNX package is
needed here (the files themselves are tested in ``tests/deploy``)."""
from __future__ import annotations

import ground_truth as gt
import pytest
import torch

from sapa.ops import _onnx, dispatch, sampled_attention, sapa_attention
from sapa.ops.backends import reference
from sapa.ops.backends.reference import sampled as sampled_reference

D, C = 3, 4
TOL_F64 = 1e-10
SIZES = {  # (H, W), (H', W')
    "x2": ((4, 5), (8, 10)),
    "2H+1": ((4, 5), (9, 11)),
    "window>map": ((1, 2), (3, 5)),
    "same": ((3, 3), (3, 3)),
}


def _arrays(size, seed=200):
    (h, w), (ho, wo) = SIZES[size]
    return (gt.random_array(seed, (2, D, ho, wo)), gt.random_array(seed + 1, (2, D, h, w)),
            gt.random_array(seed + 2, (2, C, h, w)))


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("border", gt.BORDERS)
@pytest.mark.parametrize("normalizer", gt.NORMALIZERS)
def test_attention_matches_ground_truth(normalizer, border, kernel_size, size):
    q, k, v = _arrays(size)
    (want,) = gt.attention(q, k, v, kernel_size, normalizer, border)
    got = _onnx.sapa_attention(*map(torch.tensor, (q, k, v)), kernel_size, normalizer, border)
    gt.assert_matches(got, want, TOL_F64, "out")


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("border", gt.BORDERS)
def test_primitives_match_ground_truth(border, kernel_size, size):
    q, k, v = _arrays(size)
    (scores,) = gt.similarity(q, k, kernel_size, border)
    got = _onnx.local_similarity(torch.tensor(q), torch.tensor(k), kernel_size, border)
    assert torch.equal(torch.isneginf(got), torch.from_numpy(scores == -float("inf")))
    finite = torch.from_numpy(scores > -float("inf"))
    gt.assert_matches(got[finite], scores[finite.numpy()], TOL_F64, "scores")
    kernels = gt.random_array(9, (2, kernel_size**2) + q.shape[2:])
    (out,) = gt.assemble(kernels, v, kernel_size)
    got = _onnx.local_assemble(torch.tensor(kernels), torch.tensor(v), kernel_size, border)
    gt.assert_matches(got, out, TOL_F64, "assembled")


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_inside_mask_is_the_references(kernel_size, size):
    (h, w), out = SIZES[size]
    assert torch.equal(_onnx.inside_mask(h, w, kernel_size, out, None),
                       reference.inside_mask(h, w, kernel_size, out, None))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_rounded_once(dtype):
    q, k, v = (torch.tensor(a) for a in _arrays("2H+1"))
    want = reference.sapa_attention(q.float(), k.float(), v.float(), 5, "softmax", "valid")
    got = _onnx.sapa_attention(q.to(dtype), k.to(dtype), v.to(dtype), 5, "softmax", "valid")
    assert got.dtype == dtype
    # the float32 result of the rounded inputs, rounded once
    rounded = reference.sapa_attention(q.to(dtype).float(), k.to(dtype).float(),
                                       v.to(dtype).float(), 5, "softmax", "valid")
    torch.testing.assert_close(got, rounded.to(dtype), rtol=0, atol=0)
    assert (got.float() - want).abs().max() < 2e-2


@pytest.mark.parametrize("normalizer", gt.NORMALIZERS)
def test_sampled_attention_matches_reference(normalizer):
    g = torch.Generator().manual_seed(3)
    groups, n = 2, 3
    q = torch.randn(2, groups * D, 9, 11, generator=g, dtype=torch.float64)
    k = torch.randn(2, groups * D, 4, 5, generator=g, dtype=torch.float64)
    v = torch.randn(2, C, 4, 5, generator=g, dtype=torch.float64)
    off = 1.5 * torch.randn(2, 2 * groups * n, 9, 11, generator=g, dtype=torch.float64)
    want = sampled_reference.sampled_attention(q, k, v, off, groups, n, normalizer)
    got = _onnx.sampled_attention(q, k, v, off, groups, n, normalizer)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


class _Ops(torch.nn.Module):
    def forward(self, q, k, v, off):
        return (sapa_attention(q, k, v, 3, backend="lean"),
                sampled_attention(q, k, v, off, groups=1, num_points=2))


def _targets(program) -> set[str]:
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


def test_ops_trace_plain_pytorch_while_an_onnx_exporter_traces(monkeypatch):
    args = (torch.randn(1, 2, 6, 7), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4),
            torch.randn(1, 4, 6, 7))
    custom = {t for t in _targets(torch.export.export(_Ops(), args)) if t.startswith("sapa.")}
    assert custom == {"sapa.attention.default", "sapa.sampled_attention.default"}
    monkeypatch.setattr(dispatch, "exporting_onnx", lambda: True)
    program = torch.export.export(_Ops(), args)
    assert not [t for t in _targets(program) if t.startswith("sapa.")]
    for got, want in zip(program.module()(*args), _Ops()(*args)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_exporting_onnx_follows_torch_onnx(monkeypatch):
    assert dispatch.exporting_onnx() is False
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert dispatch.exporting_onnx() is True


def test_decompositions_replace_every_forward_custom_op():
    table = _onnx.decompositions()
    for op in ("attention", "similarity", "assemble", "sampled_attention"):
        assert getattr(torch.ops.sapa, op).default in table
    # and keep torch.export's defaults
    assert set(torch.export.default_decompositions()) <= set(table)


class _All(torch.nn.Module):
    def forward(self, q, k, v, kernels, off):
        from sapa.ops import local_assemble, local_similarity
        return (sapa_attention(q, k, v, 3, normalizer="relu", border="valid"),
                local_similarity(q, k, 3, border="valid"), local_assemble(kernels, v, 3),
                sampled_attention(q, k, v, off, groups=1, num_points=2))


def test_decomposed_program_has_no_custom_op_and_computes_the_same():
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 2, 7, 9, generator=g), torch.randn(1, 2, 3, 4, generator=g),
            torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 9, 7, 9, generator=g),
            torch.randn(1, 4, 7, 9, generator=g))
    program = torch.export.export(_All(), args).run_decompositions(_onnx.decompositions())
    assert not [t for t in _targets(program) if t.startswith("sapa.")]
    for got, want in zip(program.module()(*args), _All()(*args)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
