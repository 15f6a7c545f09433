"""The ``numba`` backend: numba-compiled kernels for CPU tensors, the default on the CPU.

``backend="cpu"``, its name before the backends moved to ``sapa/ops/backends/``, is accepted as
an alias. It implements the window family of ``sapa.ops.backends.Backend``, with kernels
(``kernels.py``) that run on NCHW numpy views of the tensors (``launch.py``), in
``torch.get_num_threads()`` threads, without a ``K*K x C x H' x W'`` intermediate:

- forward: one pass per block of output rows (scores, normalisation, assembly); only the
  per-point ``stat`` is kept;
- backward: a pass over output rows recomputes the kernels and gives ``dL/dq`` plus the
  kernels and score gradients (``B x K*K x H' x W'``, as large as ``K*K`` channels of the
  output); a pass over low-resolution rows *gathers* ``dL/dk`` and ``dL/dv`` from them. No
  atomics: results do not depend on the number of threads.

Conversions at the boundary (each costs a copy; nothing else is converted):

- non-contiguous inputs (``channels_last``, slices, expanded gradients) are made contiguous
  NCHW;
- ``float16`` / ``bfloat16`` are computed in ``float32`` (numpy has no ``bfloat16``) and the
  results cast back; ``stat`` stays ``float32``.

Loading. This module needs only torch: numpy and numba load with ``launch.py`` when the backend
first runs. Kernels compile on first use for each dtype (``float32``, ``float64``) and are
cached on disk by numba (``__pycache__`` next to ``kernels.py``, or ``NUMBA_CACHE_DIR``), so
later processes load them in well under a second. Where numba cannot be imported or cannot
compile, that first run raises ``BackendUnavailable`` and records why; with
``SAPA_DISABLE_JIT=1`` the backend is off. In every such case ``can_run`` says why, the
automatic choice runs ``lean`` instead with one ``RuntimeWarning``, and a forced
``backend="numba"`` raises. Zero-size inputs run ``lean``'s code.
"""
from __future__ import annotations

import os
from typing import NoReturn

from .. import BackendUnavailable, Unavailable, lean

NAME = "numba"
FAMILIES = ("window",)
DISABLE_ENV = "SAPA_DISABLE_JIT"

# why the kernels cannot run in this process (None: not known to fail), the loaded launchers
_state: dict = {"error": None, "launch": None}


def fail(reason: str, cause: BaseException | None = None) -> NoReturn:
    """Record that the kernels cannot run here and raise ``BackendUnavailable``."""
    _state["error"] = reason
    raise BackendUnavailable(NAME, reason) from cause


def _disabled() -> str | None:
    value = os.environ.get(DISABLE_ENV, "").strip()
    return None if value in ("", "0") else f"{DISABLE_ENV}={value} is set"


def can_run(*tensors, automatic: bool = False) -> str | None:
    """``None`` if every tensor is on the CPU and the kernels are not known to fail here (no
    import: a failure to load surfaces at the first launch)."""
    for t in tensors:
        if t.device.type != "cpu":
            return f"a tensor is on {t.device}, not the CPU"
    reason = _disabled() or _state["error"]
    return None if reason is None else Unavailable(reason)


def _launcher():
    """``launch.py`` (numpy, numba), imported on first use."""
    reason = _disabled() or _state["error"]
    if reason is not None:
        raise BackendUnavailable(NAME, reason)
    if _state["launch"] is None:
        try:
            from . import launch
        except Exception as e:  # numba (or numpy) missing, or broken on this platform
            fail(f"numba cannot be imported ({type(e).__name__}: {e}); "
                 "pip install 'sapa[cpu]' installs it", e)
        _state["launch"] = launch
    return _state["launch"]


def jit_unavailable() -> str | None:
    """Why the compiled kernels cannot run in this process, or ``None`` if they can; loads
    numba to find out (``can_run`` does not)."""
    try:
        _launcher()
    except BackendUnavailable:
        return _disabled() or _state["error"]
    return None


def _any_empty(*tensors) -> bool:
    return any(t.numel() == 0 for t in tensors)


# ---- the protocol ----------------------------------------------------------------------------

def attention_fwd(q, k, v, kernel_size, normalizer, border):
    """Returns ``(out, stat)``: ``B x C x H' x W'`` in the input dtype, ``B x H' x W'``."""
    if _any_empty(q, k, v):
        return lean.attention_fwd(q, k, v, kernel_size, normalizer, border)
    return _launcher().attention_fwd(q, k, v, kernel_size, normalizer, border)


def attention_bwd(grad_out, q, k, v, out, stat, kernel_size, normalizer, border):
    """Returns ``(grad_q, grad_k, grad_v)``; recomputes the kernels from ``stat``."""
    if _any_empty(q, k, v):
        return lean.attention_bwd(grad_out, q, k, v, out, stat, kernel_size, normalizer, border)
    return _launcher().attention_bwd(grad_out, q, k, v, out, stat, kernel_size, normalizer,
                                     border)


def similarity_fwd(q, k, kernel_size, border):
    """``B x K*K x H' x W'`` scores; ``-inf`` outside the map for ``border="valid"``."""
    if _any_empty(q, k):
        return lean.similarity_fwd(q, k, kernel_size, border)
    return _launcher().similarity_fwd(q, k, kernel_size, border)


def similarity_bwd(grad, q, k, kernel_size, border):
    if _any_empty(q, k):
        return lean.similarity_bwd(grad, q, k, kernel_size, border)
    return _launcher().similarity_bwd(grad, q, k, kernel_size, border)


def assemble_fwd(kernels, v, kernel_size, border):
    """``B x C x H' x W'``; points outside the map hold ``v = 0`` (both borders)."""
    if _any_empty(kernels, v):
        return lean.assemble_fwd(kernels, v, kernel_size, border)
    return _launcher().assemble_fwd(kernels, v, kernel_size, border)


def assemble_bwd(grad, kernels, v, kernel_size, border):
    if _any_empty(kernels, v):
        return lean.assemble_bwd(grad, kernels, v, kernel_size, border)
    return _launcher().assemble_bwd(grad, kernels, v, kernel_size, border)
