"""Functional ops: the SAPA operator, its two primitives, SAPA-D's sampled operator, and backend
dispatch.

Layout (as NATTEN's): the public API here (``functional``, ``sampled``); one dispatcher
(``dispatch``); one registration of the custom ops ``torch.ops.sapa.*`` (``_library``,
registered on import); the backends under ``backends/<name>/`` behind one contract
(``backends.Backend``); shared rules in ``_checks`` (arguments), ``_dtypes`` (compute dtype,
autocast), ``_normalizers`` (names, codes, formulas) and ``_geometry`` (index arithmetic); the
ops as ONNX exporters trace them in ``_onnx``.
Importing this package needs only torch.
"""
from . import _library  # noqa: F401  (registers the custom ops)
from ._onnx import decompositions as onnx_decompositions
from .dispatch import choose_backend, list_backends
from .functional import local_assemble, local_similarity, sapa_attention
from .sampled import sampled_attention, sampled_similarity

__all__ = [
    "sapa_attention",
    "local_similarity",
    "local_assemble",
    "sampled_attention",
    "sampled_similarity",
    "choose_backend",
    "list_backends",
    "onnx_decompositions",
]
