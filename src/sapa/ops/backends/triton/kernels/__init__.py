"""Triton kernels of the SAPA operator and its two primitives (``@triton.jit`` code only).

The launchers, shapes and block sizes are in ``sapa.ops.backends.triton``; see each module's
docstring for the grid of its kernels. Whether ``triton.jit`` compiles or interprets these
kernels is decided when this package is imported (``TRITON_INTERPRET``), which is why the
backend imports one copy per mode.
"""
from . import assemble, attention, similarity

__all__ = ["attention", "similarity", "assemble"]
