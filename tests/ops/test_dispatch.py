"""The one dispatcher (``sapa.ops.dispatch``) and the backend contract (``sapa.ops.backends``).

- every backend implements ``Backend`` for the families it lists, with its signatures;
- names, families and the ``"cpu"`` alias;
- a GPU backend cannot strand a user: when Triton is missing, cannot compile for the device or
  dtype, or fails at its first launch, the automatic choice runs ``lean`` with one warning,
  while a forced ``backend="triton"`` raises. There is no GPU here, so CPU tensors stand in for
  CUDA ones (``_device_reason`` patched to accept them) and the failures are simulated.
"""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from sapa.ops import dispatch, sapa_attention
from sapa.ops.backends import FAMILIES, Backend, BackendUnavailable, Unavailable, lean
from sapa.ops.backends import triton as tb


@pytest.mark.parametrize("name", dispatch.list_backends())
def test_backends_implement_the_protocol(name):
    mod = dispatch.load_backend(name)
    assert mod.NAME == name and set(mod.FAMILIES) <= set(FAMILIES)
    assert mod.can_run(torch.zeros(1, 1, 1, 1)) is None or name == "triton"
    if name == "reference":  # plain differentiable functions instead of the protocol
        return
    for family in mod.FAMILIES:
        for fn in FAMILIES[family]:
            want = inspect.signature(getattr(Backend, fn))
            got = inspect.signature(getattr(mod, fn))
            # the same parameters, in order (names may differ; the protocol's omit ``self``)
            assert len(got.parameters) == len(want.parameters) - 1, (name, fn)


def test_families_and_names():
    assert dispatch.list_backends() == ["reference", "lean", "numba", "triton"]
    assert dispatch.list_backends("sampled") == ["reference", "lean"]
    with pytest.raises(ValueError, match="family must be one of"):
        dispatch.list_backends("windows")
    assert dispatch.canonical_backend(None) == "auto"
    assert dispatch.canonical_backend("cpu") == "numba"
    with pytest.raises(ValueError, match=r"one of \['reference', 'lean'\], got 'numba'"):
        dispatch.canonical_backend("numba", "sampled")
    with pytest.raises(ValueError, match=r"\(or the alias 'cpu'\), got 'gpu'"):
        dispatch.canonical_backend("gpu")


def test_forced_reference_does_not_run_through_the_custom_ops():
    q = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="does not run through torch.ops.sapa"):
        torch.ops.sapa.attention(q, q, q, 3, "softmax", "zeros", "reference")


# ---- Triton on a GPU it cannot serve (simulated) ---------------------------------------------

needs_triton = pytest.mark.skipif(not tb._HAVE_TRITON, reason="triton is not installed")


@pytest.fixture
def as_if_cuda(monkeypatch):
    """CPU tensors pass for CUDA ones: Triton takes them, even automatically (its kernels run
    interpreted), and the automatic order is Triton then lean, as for CUDA tensors. The
    backend's record of failures and the dispatcher's of warnings start empty."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(tb, "_device_reason", lambda tensors, automatic: None)
    monkeypatch.setattr(dispatch, "AUTO_ORDER", ("triton", "lean"))
    monkeypatch.setattr(tb, "_failed", {})
    monkeypatch.setattr(tb, "_launched", set())
    monkeypatch.setattr(dispatch, "_warned", set())
    return monkeypatch


def _qkv(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).to(dtype) for s in ((1, 2, 5, 6), (1, 2, 2, 3),
                                                            (1, 3, 2, 3))]


def _lean(q, k, v):
    return lean.attention_fwd(q, k, v, 3, "softmax", "zeros")[0]


def _fallbacks(caught):
    return [w for w in caught if "backend 'triton' cannot run here" in str(w.message)]


class _Failing:
    """Stands in for the kernels package: every kernel launch raises ``error``."""

    def __init__(self, error):
        self.error = error

    def __getattr__(self, name):
        return self

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            raise self.error
        return launch


@needs_triton
def test_simulation_runs_triton(as_if_cuda, caplog):
    q, k, v = _qkv()
    with caplog.at_level("DEBUG", logger="sapa.dispatch"):
        out = sapa_attention(q, k, v, 3)
    assert "backend triton (automatic)" in caplog.text
    torch.testing.assert_close(out, _lean(q, k, v))


def test_triton_missing(as_if_cuda):
    as_if_cuda.setattr(tb, "_HAVE_TRITON", False)
    q, k, v = _qkv()
    assert isinstance(tb.can_run(q, k, v, automatic=True), Unavailable)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [sapa_attention(q, k, v, 3) for _ in range(2)]
    assert len(_fallbacks(caught)) == 1
    assert "triton is not installed" in str(_fallbacks(caught)[0].message)
    assert all(torch.equal(out, _lean(q, k, v)) for out in outs)
    with pytest.raises(RuntimeError, match="backend='triton' cannot run here: triton is not"):
        sapa_attention(q, k, v, 3, backend="triton")


@needs_triton
@pytest.mark.parametrize("error", [
    RuntimeError("simulated: PTX .version 8.4 does not support .target sm_52"),  # compiler
    RuntimeError("simulated: CUDA error: no kernel image is available for execution"),  # driver
    ImportError("simulated: libcuda.so.1 cannot be opened"),  # the kernels cannot load
], ids=["cannot-compile", "launch-fails", "cannot-import"])
def test_first_launch_fails(as_if_cuda, error):
    as_if_cuda.setattr(tb, "kernels", lambda interpret: _Failing(error))
    q, k, v = _qkv()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = sapa_attention(q, k, v, 3)
        again = sapa_attention(q, k, v, 3)  # passed over at once: the failure is recorded
    assert torch.equal(first, _lean(q, k, v)) and torch.equal(again, first)
    warned = _fallbacks(caught)
    assert len(warned) == 1 and "first launch of attention_fwd" in str(warned[0].message)
    assert str(error) in str(warned[0].message) and "'lean'" in str(warned[0].message)
    assert "first launch" in tb.can_run(q, k, v)
    # forced, the recorded failure is an error
    with pytest.raises(RuntimeError, match="backend='triton' cannot run here: its first launch"):
        sapa_attention(q, k, v, 3, backend="triton")


@needs_triton
def test_failure_is_per_device_and_dtype(as_if_cuda):
    """A dtype Triton cannot compile (bfloat16 on an old GPU, say) does not stop the others."""
    real = tb.kernels

    def kernels(interpret):
        return _Failing(RuntimeError("simulated: bf16 unsupported")) if bf16[0] else real(interpret)

    bf16 = [True]
    as_if_cuda.setattr(tb, "kernels", kernels)
    q, k, v = _qkv(torch.bfloat16)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        sapa_attention(q, k, v, 3)
    assert "bfloat16" in tb.can_run(q, k, v)
    bf16[0] = False
    q32 = [t.float() for t in (q, k, v)]
    assert tb.can_run(*q32) is None
    torch.testing.assert_close(sapa_attention(*q32, 3, backend="triton"), _lean(*q32))


@needs_triton
def test_forced_first_launch_failure_raises(as_if_cuda):
    as_if_cuda.setattr(tb, "kernels", lambda interpret: _Failing(RuntimeError("simulated")))
    q, k, v = _qkv()
    with pytest.raises(BackendUnavailable, match="first launch of attention_fwd.*simulated"):
        sapa_attention(q, k, v, 3, backend="triton")


@needs_triton
def test_failures_after_the_first_launch_are_errors(as_if_cuda):
    """Only the first launch is guarded: a later failure is a bug to see, not a fallback."""
    q, k, v = _qkv()
    sapa_attention(q, k, v, 3)  # the first launch succeeds
    as_if_cuda.setattr(tb, "kernels", lambda interpret: _Failing(ValueError("simulated bug")))
    with pytest.raises(ValueError, match="simulated bug"):
        sapa_attention(q, k, v, 3)
