"""Shared fixtures: which backends every operator test runs on.

``backend_name`` covers every name in ``sapa.ops.list_backends()`` except the reference (the
ground truth the others are held to; it is tested itself through ``backend``) and ``triton``
(tested by its own suite under the slow ``TRITON_INTERPRET=1`` interpreter). A backend added
to ``sapa.ops.dispatch.BACKENDS`` is therefore tested by this suite without editing it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
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


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """``n`` intra-op threads inside the block, the earlier count after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Tests run thousands of ops on tiny tensors, where intra-op threads only add fork/join
    latency, and on a busy shared machine spinning OpenMP threads slow them down ~100-fold.
    A test that needs threads sets them itself (``torch.set_num_threads``)."""
    with _intra_op_threads(1):
        yield


@pytest.fixture
def one_thread():
    """One intra-op thread for this test, whatever an earlier test set (``sapa compare``'s
    ``--threads`` sets it for the process)."""
    with _intra_op_threads(1):
        yield


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


@pytest.fixture
def matting_layout(tmp_path):
    """A tiny Adobe Deep Image Matting / Composition-1k folder (``Combined_Dataset``): 3 training
    foregrounds of different sizes with alphas, 4 backgrounds (one grey, one small), and 2 test
    foregrounds composited over 2 backgrounds each (``merged/<fg>_<k>.png``), their trimaps and
    alphas. Returns the root."""
    from PIL import Image

    from sapa.tasks.matting.synthetic import make_sample

    rng = np.random.default_rng(0)
    root = tmp_path / "Combined_Dataset"
    for sub in ("Training_set/fg", "Training_set/alpha", "Training_set/bg", "Test_set/merged",
                "Test_set/trimaps", "Test_set/alpha"):
        (root / sub).mkdir(parents=True)
    for i, size in enumerate((48, 64, 80)):
        s = make_sample(rng, size, "train")
        Image.fromarray(s["fg"]).save(root / "Training_set/fg" / f"fg{i}.jpg", quality=95)
        Image.fromarray(s["alpha"]).save(root / "Training_set/alpha" / f"fg{i}.jpg", quality=95)
    for i, size in enumerate((96, 40, 72, 64)):
        bg = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
        Image.fromarray(bg[..., 0] if i == 3 else bg).save(root / "Training_set/bg" / f"bg{i}.jpg")
    for name, size in (("cat-1_1920", 48), ("hair_2", 40)):
        s = make_sample(rng, size, "val")
        Image.fromarray(s["alpha"]).save(root / "Test_set/alpha" / f"{name}.png")
        for k in range(2):
            bg = rng.integers(0, 256, (size, size, 3)).astype(np.float64)
            a = s["alpha"][..., None] / 255.0
            merged = np.round(a * s["fg"] + (1 - a) * bg).astype(np.uint8)
            Image.fromarray(merged).save(root / "Test_set/merged" / f"{name}_{k}.png")
            Image.fromarray(s["trimap"]).save(root / "Test_set/trimaps" / f"{name}_{k}.png")
    return root
