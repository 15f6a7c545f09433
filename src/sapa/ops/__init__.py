"""Functional ops: the SAPA operator, its two primitives, and backend dispatch.

Importing this package registers ``torch.ops.sapa.*`` (see ``_library``).
"""
from . import _library  # noqa: F401  (registers the custom ops)
from .dispatch import choose_backend, list_backends
from .functional import local_assemble, local_similarity, sapa_attention
from .sampled import sampled_attention

__all__ = [
    "sapa_attention",
    "local_similarity",
    "local_assemble",
    "sampled_attention",
    "choose_backend",
    "list_backends",
]
