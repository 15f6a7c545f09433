"""Shared fixtures: which backends every operator test runs on.

``backend_name`` covers every name in ``sapa.ops.list_backends()`` except the reference (the
ground truth the others are held to; it is tested itself through ``backend``) and ``triton``
(tested by its own suite under the slow ``TRITON_INTERPRET=1`` interpreter). A backend added
to ``sapa.ops.dispatch.BACKENDS`` is therefore tested by this suite without editing it.
"""
from __future__ import annotations

import pytest
import torch

from sapa.ops import list_backends
from sapa.ops.dispatch import load_backend

# backends with a suite of their own, and why
OWN_SUITE = {
    "reference": "the reference is the ground truth of the others (covered by `backend`)",
    "triton": "tested by its own suite under TRITON_INTERPRET=1",
}
FAST_BACKENDS = [name for name in list_backends() if name not in OWN_SUITE]
# None: the automatic choice of sapa.ops.choose_backend
ALL_BACKENDS = [None, "reference", *FAST_BACKENDS]


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Tests run thousands of ops on tiny tensors, where intra-op threads only add fork/join
    latency, and on a busy shared machine spinning OpenMP threads slow them down ~100-fold.
    A test that needs threads sets them itself (``torch.set_num_threads``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _backend_id(name):
    return "auto" if name is None else name


@pytest.fixture(params=FAST_BACKENDS)
def backend_name(request) -> str:
    """Every forced non-reference, non-triton backend."""
    return request.param


@pytest.fixture(params=ALL_BACKENDS, ids=_backend_id)
def backend(request) -> str | None:
    """The automatic choice (``None``), the reference and every backend of ``backend_name``."""
    return request.param


@pytest.fixture(params=["reference", *FAST_BACKENDS])
def forced_backend(request) -> str:
    """The reference and every backend of ``backend_name`` (for sweeps where the automatic
    choice, one of these, would only repeat a case)."""
    return request.param


@pytest.fixture
def require_backend():
    """``require_backend(name, *tensors)`` skips the test (saying why) when the backend's own
    ``can_run`` predicate refuses these tensors, instead of failing on a machine that lacks,
    say, a compiler. ``None`` (automatic) always runs."""

    def check(name, *tensors):
        if name is None:
            return
        reason = load_backend(name).can_run(*tensors)
        if reason is not None:
            pytest.skip(f"backend {name!r} cannot run these inputs here: {reason}")

    return check
